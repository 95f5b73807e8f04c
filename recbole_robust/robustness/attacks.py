"""Attacks at test time on a trained model (AMR table 3 and figure 4, ACAE table 2 and figure 4).

An attack perturbs named tensors of the trained model (item content features, embedding tables,
weight matrices: the model's ``perturbation_targets``) and evaluates it on the test set:

* ``fgm``: the fast gradient method built from the *training* loss: the gradient of the model's
  ``rec_loss`` summed over one pass of the training data, with respect to an additive perturbation,
  scaled to L2 norm ``eps`` per row (features, embeddings) or per tensor (weights);
* ``random``: Gaussian noise with exactly the norms ``fgm`` has (the control);
* ``sign``: ``eps * sign(gradient)``;
* ``pgd``: projected gradient descent (Madry et al., ICLR 2018) on the same training loss, L2
  geometry: ``steps`` steps of FGM of norm ``step_size * eps`` from the current perturbation, each
  followed by the projection onto the eps-ball (per row or per tensor, as FGM's norm), optionally from
  a random start inside the ball (on every row). ``step_size`` defaults to 2.5 / ``steps`` (Madry's
  rule). With one step of size 1 and no random start it is FGM. Each step is one gradient pass over
  the training data, for each eps of a sweep; the batches (and their sampled negatives) are drawn once,
  so every step, and FGM in the same sweep, ascends the same loss.

Perturbations are injected with ``functional_call`` (``perturbation.call_with``): the model is not
copied and is unchanged afterwards. One gradient pass serves every eps of a sweep. Every evaluation
starts from the run's seed, so clean and attacked metrics use the same sampled negatives.
"""
from logging import getLogger

import torch
from recbole.utils import init_seed

from recbole_robust.errors import RecBoleRobustError
from recbole_robust.model.contract import hook
from recbole_robust.trainer.perturbation import (
    ADV_TYPES, call_with, gradients, named_tensor, normalise, perturbation, project, rec_loss_fn, target_groups,
)

ATTACKS = ADV_TYPES + ("pgd",)


def attack_terms(config, model):
    """The attacked tensor groups: ``attack_targets``, else the model's ``adv_targets``, else its features.

    Returns a list of ``(names, kinds)``.
    """
    allowed = hook(model, "perturbation_targets")
    key = "attack_targets" if config["attack_targets"] else "adv_targets"
    groups = target_groups(config["attack_targets"] or config["adv_targets"], model, key)
    if not groups:
        groups = [["item_features"]] if "item_features" in allowed else [[n for n, k in allowed.items() if k == "row"]]
    if not any(groups):
        raise RecBoleRobustError(f"{type(model).__name__} has nothing to attack; set attack_targets")
    return [(g, [allowed[n] for n in g]) for g in groups]


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
    train_data = train_data if isinstance(train_data, list) else list(train_data)
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


def evaluate_with(trainer, test_data, tensors=None):
    """Test metrics of the trainer's model with ``tensors`` replacing its own (a dict of name -> tensor).

    The random number generators are reset to the run's seed first, so that sampled evaluation
    (e.g. 999 negatives per test item) draws the same negatives for every evaluation it is compared with.
    """
    init_seed(trainer.config["seed"], trainer.config["reproducibility"])
    return call_with(trainer.model, tensors or {}, lambda: trainer.evaluate(test_data, load_best_model=False))


def pgd_settings(config):
    """``attack_steps``, ``attack_step_size`` and ``attack_random_start`` of ``config`` as PGD's keywords."""
    return {"steps": config["attack_steps"], "step_size": config["attack_step_size"],
            "random_start": bool(config["attack_random_start"])}


def attack_perturbations(model, train_data, terms, eps, method="fgm", pgd=None, seed=0, gradients_at_zero=None):
    """The attack's perturbed tensors ``{name: tensor}`` of every target group at norm ``eps``."""
    tensors = {}
    if method == "pgd" and not isinstance(train_data, list):
        train_data = list(train_data)  # one draw of the batches: PGD's first step is FGM's on the same loss
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


def check_attack(methods, eps_list, pgd=None):
    if any(e < 0 for e in eps_list):
        raise RecBoleRobustError(f"attack_eps must be >= 0, got {min(eps_list)}")
    for method in methods:
        if method not in ATTACKS:
            raise RecBoleRobustError(f"attack must be one of {', '.join(ATTACKS)}, not '{method}'")
    pgd = pgd or {}
    if "pgd" in methods and pgd.get("steps", 10) < 1:
        raise RecBoleRobustError(f"attack_steps must be >= 1, got {pgd['steps']}")
    if "pgd" in methods and pgd.get("step_size") is not None and not pgd["step_size"] > 0:
        raise RecBoleRobustError(f"attack_step_size must be > 0 (a fraction of eps), got {pgd['step_size']}")


def attack_sweep(trainer, train_data, test_data, eps_list, methods=("fgm", "random"), terms=None, seed=0, pgd=None,
                 evaluate=None):
    """Evaluate the trained model under each attack method, target group and eps.

    ``pgd`` holds PGD's ``steps``, ``step_size`` and ``random_start`` (``pgd_settings``); ``evaluate``
    replaces ``evaluate_with`` (same arguments), e.g. to keep per-user metrics. Returns
    ``(clean_result, rows)``; each row is a dict with ``target``, ``method``, ``eps`` and the attacked
    metrics.
    """
    evaluate = evaluate or evaluate_with
    model = trainer.model
    check_attack(methods, eps_list, pgd)
    terms = terms or attack_terms(trainer.config, model)
    clean = evaluate(trainer, test_data)
    rows = []
    log = getLogger()
    if "pgd" in methods:
        train_data = list(train_data)  # FGM and every PGD step on the same batches (the same negatives)
    for names, kinds in terms:
        grads = training_gradients(model, train_data, names)
        for method in methods:
            if method == "pgd":
                for eps in eps_list:
                    tensors = attack_perturbations(model, train_data, [(names, kinds)], eps, "pgd", pgd, seed,
                                                   {tuple(names): grads})
                    with torch.no_grad():
                        result = evaluate(trainer, test_data, tensors)
                    rows.append({"target": "+".join(names), "method": method, "eps": float(eps), **result})
                    log.info(f"pgd on {'+'.join(names)}, eps {eps:g}: done")
                continue
            generator = torch.Generator(device=grads[names[0]].device).manual_seed(seed)
            unit = {n: perturbation(grads[n], 1.0, k, method, generator) for n, k in zip(names, kinds)}
            for eps in eps_list:
                # fgm and random scale linearly with eps; sign noise is eps * sign(g)
                tensors = {n: named_tensor(model, n).detach() + eps * unit[n] for n in names}
                with torch.no_grad():
                    result = evaluate(trainer, test_data, tensors)
                rows.append({"target": "+".join(names), "method": method, "eps": float(eps), **result})
    return clean, rows
