"""Sharpness-aware minimisation (``sharpness: sam | asam | ssam_f``), a step of the trainer like Mirror Gradient.

On every batch, with g = grad L(w) and the model's trainable parameters w:

    backward L(w); w <- w + e(w); RecBole's loop backpropagates L(w + e) (same batch, same negatives);
    w is restored just before RecBole's optimiser steps, so the step applies grad L(w + e) at w

(Foret et al., ICLR 2021, eq. 2-3). The perturbation e:

* ``sam``: e = rho g / ||g|| (global L2 norm over all parameters);
* ``asam``: e = rho T^2 g / ||T g||, T = |w| elementwise (Kwon et al., ICML 2021, with eta = 0), so
  ||T^-1 e|| = rho;
* ``ssam_f``: e = m * rho g / ||g|| (Mi et al., NeurIPS 2022, SSAM-F, as its authors' code: the norm is
  the full gradient's), m a 0/1 mask keeping the ``1 - ssam_sparsity`` share of entries with the largest
  empirical Fisher information, recomputed at the first batch of every ``ssam_mask_interval``-th epoch.

SAM and ASAM are ``pytorch_optimizer.SAM`` (``adaptive=True`` for ASAM): its ``first_step`` computes and
applies e and keeps w (state ``old_p``). Its own update, a second optimiser wrapped around RecBole's, is not
used: the optimiser stays RecBole's (schedulers, clipping and checkpoints see a ``torch.optim`` optimiser),
and the SAM object only perturbs. No maintained library has SSAM-F; it is the library's SAM perturbation
masked here. Its Fisher information is the sum of squared first-pass mini-batch gradients since the
previous mask (the authors' code sums squared gradients of 1,024 single-sample losses; a single-sample
gradient of a graph recommender costs a whole propagation, a mini-batch gradient is computed anyway). The
mask is not checkpointed: a resumed run recomputes it on its first batch.

SAM and Mirror Gradient are not combined (both are extra steps on the same batch; what their composition
should mean is not defined by either paper): ``check_sharpness_config`` refuses it. The adversary composes:
L is the adversarial loss, perturbed and unperturbed.
"""
import contextlib

import torch

from recbole_robust import settings
from recbole_robust.errors import RecBoleRobustError

SHARPNESS = ("sam", "asam", "ssam_f")
SETTINGS = {
    "sharpness": (lambda v: v is None or isinstance(v, str) and v.lower() in SHARPNESS,
                  "sam, asam or ssam_f (or ~ for none)"),
    "sam_rho": settings.NON_NEGATIVE,
    "ssam_sparsity": (lambda v: settings.is_number(v) and 0 <= v < 1, "a number in [0, 1)"),
    "ssam_mask_interval": settings.POSITIVE_INT,
}
"""The settings of sharpness-aware minimisation (``config.SETTINGS``)."""


def check_sharpness_config(config):
    """``sharpness`` and ``sam_*`` of a run: each value (the schema), and not with Mirror Gradient."""
    if config["sharpness"] is None:
        return
    settings.check_config(config, SETTINGS)
    if config["mirror_gradient"]:
        raise RecBoleRobustError(f"sharpness={config['sharpness']} and mirror_gradient=True cannot be combined: "
                                 "choose one")


class SharpnessStep:
    """Sharpness-aware minimisation of ``trainer``, built once with the trainer (see the module docstring): it
    keeps the SAM object, the SSAM-F Fisher sum and mask across epochs; ``epoch`` attaches it to one epoch."""

    def __init__(self, trainer):
        from pytorch_optimizer import SAM

        config = trainer.config
        self.trainer, self.loss_func = trainer, None
        self.method = config["sharpness"].lower()
        self.params = [p for p in trainer.model.parameters() if p.requires_grad]
        self.sam = SAM(self.params, torch.optim.SGD, rho=float(config["sam_rho"]), adaptive=self.method == "asam", lr=0.0)
        self.fisher, self.mask, self.update_mask = None, None, False
        self.mask_interval = config["ssam_mask_interval"]
        self.sparsity = float(config["ssam_sparsity"])
        device = trainer.device if isinstance(trainer.device, torch.device) else torch.device(trainer.device)
        self.device_type = device.type
        self.scaler = None  # made at the first epoch, with the trainer's enable_scaler; kept across epochs

    def epoch(self, loss_func, epoch_idx):
        """Start epoch ``epoch_idx``, whose loss is ``loss_func``; SSAM-F recomputes its mask on its first batch
        every ``ssam_mask_interval`` epochs (and on the first batch of a run)."""
        self.loss_func = loss_func
        if self.scaler is None:
            self.scaler = torch.amp.GradScaler(self.device_type, enabled=bool(self.trainer.enable_scaler))
        self.update_mask = self.method == "ssam_f" and (self.mask is None or epoch_idx % self.mask_interval == 0)
        return self

    def loss(self, interaction):
        """L(w + e(w)) for RecBole's loop to backpropagate; w is perturbed until its optimiser steps."""
        self.restore()  # a step the gradient scaler skipped left w perturbed
        loss = self.loss_func(interaction)
        total = sum(loss) if isinstance(loss, tuple) else loss
        with torch.enable_grad():
            self.scaler.scale(total).backward()  # the scale cancels in e: it only guards fp16 underflow
        grads = [p.grad for p in self.params if p.grad is not None]
        if grads and bool(torch.stack([torch.isfinite(g).all() for g in grads]).all()):  # one host sync a batch
            if self.method == "ssam_f":
                self._fisher()
            self.sam.first_step(zero_grad=True)
            if self.method == "ssam_f":
                self._mask_perturbation()
        else:  # no perturbation on this batch: a plain step (with a lower scale, as GradScaler would do)
            if self.scaler.is_enabled():
                self.scaler.update(self.scaler.get_scale() * self.scaler.get_backoff_factor())
            self.trainer.optimizer.zero_grad()
        return self.loss_func(interaction)

    @torch.no_grad()
    def restore(self, *args):
        """w + e -> w (the library's saved copy)."""
        for p in self.params:
            old = self.sam.state[p].pop("old_p", None)
            if old is not None:
                p.copy_(old)

    @torch.no_grad()
    def _fisher(self):
        squares = [p.grad.square() if p.grad is not None else torch.zeros_like(p) for p in self.params]
        self.fisher = squares if self.fisher is None else [f.add_(s) for f, s in zip(self.fisher, squares)]
        if self.update_mask:
            values = torch.cat([f.flatten() for f in self.fisher])
            keep = torch.zeros_like(values, dtype=torch.bool)
            keep[torch.topk(values, int(values.numel() * (1 - self.sparsity))).indices] = True
            self.mask = [m.view_as(p) for m, p in zip(keep.split([p.numel() for p in self.params]), self.params)]
            self.fisher, self.update_mask = None, False

    @torch.no_grad()
    def _mask_perturbation(self):
        for p, m in zip(self.params, self.mask):
            old = self.sam.state[p].get("old_p")
            if old is not None:
                p.copy_(torch.where(m, p, old))

    @contextlib.contextmanager
    def attached(self):
        """Restore w before each of the trainer's optimiser steps, for the duration of an epoch."""
        handle = self.trainer.optimizer.register_step_pre_hook(self.restore)
        try:
            yield self
        finally:
            handle.remove()
            self.restore()
