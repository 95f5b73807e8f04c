"""Perturbations that raise the training loss, shared by the attacks (``robustness/attacks.py``), item
promotion (``robustness/promotion.py``) and the validation hook (``robustness/runs.py``): the training
loss's gradient over one pass, L2 projected ascent, PGD, and every target group's perturbed tensors
for one method and eps. They build on the engine (``engine.py``); see ``robustness/attacks.py`` for
what each method means.
"""
import torch

from recbole_robust.errors import RecBoleRobustError
from recbole_robust.perturb.engine import gradients, named_tensor, normalise, perturbation, project, rec_loss_fn


def drawn_batches(train_data, device):
    """The loader's batches drawn once (the same sampled negatives for every pass over them) and moved to ``device``
    once, not on every pass of an iterated attack; a list given here is moved where it is not yet."""
    return [interaction.to(device) for interaction in train_data]


def training_gradients(model, train_data, names, offset=None):
    """Gradient of the training loss (one pass, summed over batches) w.r.t. perturbations of ``names``
    (at the perturbations ``offset``, a dict of name -> tensor, if given)."""
    loss_fn = rec_loss_fn(model)
    total = {n: torch.zeros_like(named_tensor(model, n)) for n in names}
    model.eval()  # no dropout; the loss is still differentiable
    for interaction in train_data:
        interaction = interaction.to(named_tensor(model, names[0]).device)
        for n, g in gradients(model, names, loss_fn, interaction, offset=offset).items():
            total[n] += g
    return total


def projected_ascent(gradient_at, delta, kinds, eps, steps=10, step_size=None, first_gradient=None):
    """``steps`` steps of L2 projected gradient ascent from ``delta`` (``{name: tensor}``): each step moves
    every tensor by ``step_size`` x eps (default 2.5 / steps) along its normalised gradient
    ``gradient_at(delta)[name]`` (per row or per tensor, ``kinds``) and projects it back onto the eps-ball.
    ``first_gradient`` is the gradient at ``delta`` if the caller already has it. Rows whose gradient is
    zero (rows outside the attacker's reach) stay where they are."""
    if steps < 1:
        raise RecBoleRobustError(f"attack_steps must be >= 1, got {steps}")
    step = (2.5 / steps if step_size is None else step_size) * eps
    for i in range(steps):
        grads = first_gradient if i == 0 and first_gradient is not None else gradient_at(delta)
        delta = {n: project(delta[n] + normalise(grads[n], step, kind), eps, kind).detach()
                 for n, kind in zip(delta, kinds)}
    return delta


def pgd_perturbation(model, train_data, names, kinds, eps, steps=10, step_size=None, random_start=False,
                     generator=None, first_gradient=None):
    """PGD's perturbations ``{name: delta}`` of L2 norm at most ``eps`` (per row or per tensor) that raise
    the training loss.

    ``step_size`` is a fraction of ``eps`` (default 2.5 / steps); ``first_gradient`` (the gradient at
    zero on the same batches, e.g. FGM's) saves the first pass when there is no random start. The
    training batches are drawn once, so that every step ascends the same loss (the same sampled
    negatives); a loader given here is iterated once.
    """
    train_data = drawn_batches(train_data, named_tensor(model, names[0]).device)
    delta = {}
    for n, kind in zip(names, kinds):
        base = named_tensor(model, n)
        if random_start:  # a uniform direction and a radius uniform in [0, eps]
            noise = torch.randn(base.shape, generator=generator, device=base.device, dtype=base.dtype)
            shape = (base.shape[0], 1) if kind == "row" and base.dim() > 1 else ()
            radius = eps * torch.rand(shape, generator=generator, device=base.device, dtype=base.dtype)
            delta[n] = normalise(noise, 1.0, kind) * radius
        else:
            delta[n] = torch.zeros_like(base)
    return projected_ascent(lambda d: training_gradients(model, train_data, names, offset=d), delta, kinds, eps,
                            steps, step_size, None if random_start else first_gradient)


def attack_perturbations(model, train_data, terms, eps, method="fgm", pgd=None, seed=0, gradients_at_zero=None):
    """The attack's perturbed tensors ``{name: tensor}`` of every target group at norm ``eps``."""
    tensors = {}
    if method == "pgd":  # one draw of the batches: PGD's first step is FGM's on the same loss
        train_data = drawn_batches(train_data, next(model.parameters()).device)
    for names, kinds in terms:
        grads = (gradients_at_zero or {}).get(tuple(names))
        if grads is None and not (method == "pgd" and (pgd or {}).get("random_start")):
            grads = training_gradients(model, train_data, names)
        generator = torch.Generator(device=named_tensor(model, names[0]).device).manual_seed(seed)
        if method == "pgd":
            delta = pgd_perturbation(model, train_data, names, kinds, eps, generator=generator, first_gradient=grads,
                                     **(pgd or {}))
        else:
            delta = {n: perturbation(grads[n], eps, k, method, generator) for n, k in zip(names, kinds)}
        tensors.update({n: named_tensor(model, n).detach() + delta[n] for n in names})
    return tensors
