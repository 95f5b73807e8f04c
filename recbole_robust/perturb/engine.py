"""The perturbation engine: adversarial regularisers for training and perturbations for attacks.

A model names what may be perturbed in ``perturbation_targets``: ``{tensor name: "row" | "tensor"}``
(item content features and embeddings are normalised per row, weight matrices per tensor). The
config lists adversarial *terms*; a term is one target name, or a list of names perturbed together:

    adv_targets: [item_features]                                   # AMR
    adv_targets: [[user_embedding.weight, item_embedding.weight]]  # APR: one term, both tables
    adv_targets: [encoder.weight, decoder.weight]                  # ACAE: two terms
    adv_eps: 0.1            # one value, or one per term
    adv_lambda: 1.0         # one value, or one per term
    adv_type: fgm           # fgm | sign | random

and the training loss is (AMR eq. 7, ACAE eq. 6):

    L(theta) + sum_t lambda_t * L_rec(theta + n_t),   n_t = eps_t * g_t / ||g_t||,   g_t = dL_rec/dn_t at 0

``L`` is the model's ``calculate_loss``; ``L_rec`` is its ``rec_loss`` (the loss without L2
regularisers, AMR section 3.2) when it has one. ``fgm`` is the fast gradient method with the L2 norm
(AMR eq. 11-12, ACAE eq. 4, APR), ``sign`` is Goodfellow et al.'s fast gradient sign method
(``eps * sign(g)``), ``random`` is Gaussian noise scaled to the same L2 norm as ``fgm`` (rows the
gradient does not reach stay zero), the control of AMR figure 4. The mini-batch loss is a sum over
its examples' losses (RecBole's losses are means; the direction of ``g`` is the same).

Perturbed tensors are injected with ``torch.func.functional_call``, without copying the model.
"""
import torch
from torch import nn
from torch.func import functional_call

from recbole_robust import settings
from recbole_robust.errors import RecBoleRobustError
from recbole_robust.model.contract import hook

ADV_TYPES = ("fgm", "sign", "random")
LEARNERS = ("adam", "sgd", "adagrad", "rmsprop", "sparse_adam")
"""The optimisers RecBole's ``Trainer._build_optimizer`` builds (``learner``, ``adv_learner``)."""
SETTINGS = {
    "adv_eps": (lambda v: settings.number_list(v, 0), ">= 0 and finite: a number, or a list with one per term"),
    "adv_lambda": (lambda v: settings.number_list(v, 0), ">= 0 and finite: a number, or a list with one per term"),
    "adv_type": (lambda v: v in ADV_TYPES, f"one of {', '.join(ADV_TYPES)}"),
    "adv_start_epoch": (lambda v: settings.is_int(v) and v >= 0, "an integer >= 0"),
    "adv_learner": (lambda v: v is None or isinstance(v, str) and v.lower() in LEARNERS,
                    f"one of {', '.join(LEARNERS)} (or ~: keep learner)"),
    "adv_learning_rate": (lambda v: v is None or settings.is_number(v) and v > 0, "a number > 0 (or ~: learning_rate)"),
}
"""The adversarial training settings (``config.SETTINGS``); ``parse_terms`` adds the rules between them and the
model's targets."""


class _Bound(nn.Module):
    """Runs ``fn(*args)`` as the forward of a module that owns ``model``, for ``functional_call``."""

    def __init__(self, model, fn):
        super().__init__()
        self.model = model
        self.fn = fn

    def forward(self, *args):
        return self.fn(*args)


def call_with(model, tensors, fn, *args):
    """``fn(*args)`` while ``model``'s named parameters/buffers are replaced by ``tensors``."""
    bound = _Bound(model, fn)
    return functional_call(bound, {f"model.{name}": value for name, value in tensors.items()}, args, strict=False)


def named_tensor(model, name):
    """A parameter or buffer of ``model`` by its dotted name."""
    tensors = dict(model.named_parameters())
    tensors.update(model.named_buffers())
    if name not in tensors:
        raise RecBoleRobustError(f"{type(model).__name__} has no tensor '{name}'")
    return tensors[name]


def rec_loss_fn(model):
    """The loss an adversary maximises: ``rec_loss`` (no regularisers) if the model has one."""
    return hook(model, "rec_loss") or model.calculate_loss


def normalise(direction, eps, kind):
    """Scale ``direction`` to L2 norm ``eps`` per row (``kind='row'``) or over the tensor."""
    if kind == "row":
        norm = direction.norm(dim=-1, keepdim=True)
    else:
        norm = direction.norm()
    return eps * direction / norm.clamp_min(1e-12)


def project(delta, eps, kind):
    """``delta`` projected onto the L2 ball of radius ``eps``, per row (``kind='row'``) or over the tensor."""
    norm = delta.norm(dim=-1, keepdim=True) if kind == "row" else delta.norm()
    return delta * (eps / norm.clamp_min(1e-12)).clamp(max=1.0)


def perturbation(gradient, eps, kind, adv_type="fgm", generator=None):
    """The perturbation of one tensor from the gradient of the loss with respect to it.

    ``fgm``: ``eps * g / ||g||``; ``sign``: ``eps * sign(g)``; ``random``: Gaussian noise with the
    norm ``fgm`` would have (``eps`` per row the gradient reaches, or over the tensor).
    """
    if adv_type == "fgm":
        return normalise(gradient, eps, kind)
    if adv_type == "sign":
        return eps * gradient.sign()
    if adv_type == "random":
        noise = torch.randn(gradient.shape, generator=generator, device=gradient.device, dtype=gradient.dtype)
        noise = normalise(noise, eps, kind)
        if kind == "row":
            noise = noise * (gradient.abs().sum(dim=-1, keepdim=True) > 0)
        return noise
    raise RecBoleRobustError(f"adv_type must be one of {', '.join(ADV_TYPES)}, not '{adv_type}'")


class AdversarialTerm:
    """One adversarial regulariser: ``lam * L_rec(theta + n)`` with ``n`` on ``names`` at norm ``eps``."""

    def __init__(self, names, kinds, eps, lam):
        self.names, self.kinds, self.eps, self.lam = names, kinds, eps, lam

    def __repr__(self):
        return f"AdversarialTerm({'+'.join(self.names)}, eps={self.eps}, lambda={self.lam})"


def _per_term(value, n_terms, key):
    values = list(value) if isinstance(value, (list, tuple)) else [value] * n_terms
    if len(values) != n_terms:
        raise RecBoleRobustError(f"{key} has {len(values)} values for {n_terms} adversarial terms")
    return [float(v) for v in values]


def target_groups(targets, model, key):
    """``adv_targets`` / ``attack_targets`` -> groups of tensor names perturbed together, validated.

    A target is a name of the model's ``perturbation_targets`` or a list of names (one group);
    ``[a, b]`` is two groups, ``[[a, b]]`` one.
    """
    if not targets:
        return []
    if isinstance(targets, str):
        targets = [targets]
    if not isinstance(targets, list):
        raise RecBoleRobustError(f"{key} must be a tensor name or a list of them, got {targets!r}")
    groups = [[t] if isinstance(t, str) else t for t in targets]
    allowed = hook(model, "perturbation_targets")
    for name in (n for group in groups for n in (group if isinstance(group, list) else [group])):
        if not isinstance(name, str) or name not in allowed:
            raise RecBoleRobustError(
                f"{key}: {type(model).__name__} cannot be perturbed at {name!r}; its targets are "
                f"{', '.join(allowed) or 'none'}"
            )
    return [list(g) for g in groups]


def parse_terms(config, model):
    """Adversarial terms of ``config`` for ``model``, validated; ``[]`` when none are configured."""
    groups = target_groups(config["adv_targets"], model, "adv_targets")
    if not groups:
        return []
    settings.check_config(config, SETTINGS)
    allowed = hook(model, "perturbation_targets")
    eps = _per_term(config["adv_eps"], len(groups), "adv_eps")
    lam = _per_term(config["adv_lambda"], len(groups), "adv_lambda")
    return [AdversarialTerm(g, [allowed[n] for n in g], e, l) for g, e, l in zip(groups, eps, lam)]


def gradients(model, names, loss_fn, *args, offset=None, scaler=None):
    """Gradient of ``loss_fn(*args)`` with respect to an additive perturbation of each named tensor, at 0
    (at ``offset``, a dict of perturbations already applied, for iterated attacks).

    ``scaler`` (a ``torch.amp.GradScaler``; training with ``enable_amp`` and ``enable_scaler``): the loss is scaled
    before the backward pass, so that float16 gradients do not underflow, and the gradients are unscaled; where
    they overflowed, they are zero (no perturbation on this batch) and the scaler backs off, as for a skipped
    optimiser step. No host synchronisation."""
    zeros = {n: torch.zeros_like(named_tensor(model, n), requires_grad=True) for n in names}
    shifted = {n: named_tensor(model, n) + zeros[n] + (offset[n] if offset else 0) for n in names}
    loss = call_with(model, shifted, loss_fn, *args)
    leaves = [zeros[n] for n in names]
    scaled = scaler is not None and scaler.is_enabled()
    grads = torch.autograd.grad(scaler.scale(loss) if scaled else loss, leaves, allow_unused=True)
    grads = [g if g is not None else torch.zeros_like(z) for g, z in zip(grads, leaves)]
    if scaled:
        for leaf, grad in zip(leaves, grads):
            leaf.grad = grad
        scaler.unscale_(torch.optim.SGD(leaves, lr=0.0))  # the public way to unscale and record an overflow
        scaler.update()
        finite = torch.stack([torch.isfinite(leaf.grad).all() for leaf in leaves]).all()
        grads = [torch.where(finite, leaf.grad, torch.zeros_like(leaf.grad)) for leaf in leaves]
    return dict(zip(names, grads))


def term_perturbations(model, term, adv_type, loss_fn, *args, generator=None, reduce=None, scaler=None):
    """The perturbations ``{name: n}`` of one term for the examples in ``args``; ``reduce`` (several processes:
    ``GradientSync.average_list``) averages the gradients over the ranks first, so every rank takes the same;
    ``scaler`` scales the loss for the backward pass (``gradients``)."""
    grads = gradients(model, term.names, loss_fn, *args, scaler=scaler)
    if reduce is not None:
        grads = dict(zip(term.names, reduce([grads[n] for n in term.names])))
    return {
        n: perturbation(grads[n], term.eps, kind, adv_type, generator).detach()
        for n, kind in zip(term.names, term.kinds)
    }


class AdversarialLoss:
    """``loss_func`` for RecBole's training loop: clean loss plus every adversarial term."""

    def __init__(self, model, terms, adv_type="fgm"):
        self.model, self.terms, self.adv_type = model, terms, adv_type
        self.rec_loss = rec_loss_fn(model)
        self.reduce = None  # set by a trainer of several processes
        self.scaler = None  # set by a trainer with enable_amp and enable_scaler: the adversary's gradient scaler

    def __call__(self, interaction):
        loss = self.model.calculate_loss(interaction)
        for term in self.terms:
            if term.lam == 0:
                continue
            noise = term_perturbations(self.model, term, self.adv_type, self.rec_loss, interaction, reduce=self.reduce,
                                       scaler=self.scaler)
            shifted = {n: named_tensor(self.model, n) + noise[n] for n in term.names}
            loss = loss + term.lam * call_with(self.model, shifted, self.rec_loss, interaction)
        return loss
