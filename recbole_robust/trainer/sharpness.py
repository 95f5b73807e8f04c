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

from recbole_robust.errors import RecBoleRobustError

SHARPNESS = ("sam", "asam", "ssam_f")


def check_sharpness_config(config):
    method = config["sharpness"]
    if method is None:
        return
    if not isinstance(method, str) or method.lower() not in SHARPNESS:
        raise RecBoleRobustError(f"sharpness must be one of {', '.join(SHARPNESS)} (or ~ for none), got {method!r}")
    rho = config["sam_rho"]
    if not isinstance(rho, (int, float)) or isinstance(rho, bool) or rho < 0:
        raise RecBoleRobustError(f"sam_rho must be a number >= 0, got {rho!r}")
    sparsity = config["ssam_sparsity"]
    if not isinstance(sparsity, (int, float)) or isinstance(sparsity, bool) or not 0 <= sparsity < 1:
        raise RecBoleRobustError(f"ssam_sparsity must be a number in [0, 1), got {sparsity!r}")
    interval = config["ssam_mask_interval"]
    if not isinstance(interval, int) or isinstance(interval, bool) or interval < 1:
        raise RecBoleRobustError(f"ssam_mask_interval must be an integer >= 1, got {interval!r}")
    if config["mirror_gradient"]:
        raise RecBoleRobustError(f"sharpness={method} and mirror_gradient=True cannot be combined: choose one")


class SharpnessStep:
    """Sharpness-aware minimisation for one epoch of ``trainer`` (see the module docstring)."""

    def __init__(self, trainer, loss_func, epoch_idx):
        from pytorch_optimizer import SAM

        config = trainer.config
        check_sharpness_config(config)
        self.trainer, self.loss_func = trainer, loss_func
        self.method = config["sharpness"].lower()
        self.params = [p for p in trainer.model.parameters() if p.requires_grad]
        state = getattr(trainer, "_sharpness_state", None)
        if state is None:  # kept by the trainer across epochs: the SAM object, the SSAM-F Fisher sum and mask
            sam = SAM(self.params, torch.optim.SGD, rho=float(config["sam_rho"]), adaptive=self.method == "asam", lr=0.0)
            state = trainer._sharpness_state = {"sam": sam, "fisher": None, "mask": None}
        self.state = state
        self.sam = state["sam"]
        self.update_mask = self.method == "ssam_f" and (
            state["mask"] is None or epoch_idx % config["ssam_mask_interval"] == 0)
        self.sparsity = float(config["ssam_sparsity"])
        device = trainer.device if isinstance(trainer.device, torch.device) else torch.device(trainer.device)
        self.scaler = torch.amp.GradScaler(device.type, enabled=bool(trainer.enable_scaler))

    def loss(self, interaction):
        """L(w + e(w)) for RecBole's loop to backpropagate; w is perturbed until its optimiser steps."""
        self.restore()  # a step the gradient scaler skipped left w perturbed
        loss = self.loss_func(interaction)
        total = sum(loss) if isinstance(loss, tuple) else loss
        with torch.enable_grad():
            self.scaler.scale(total).backward()  # the scale cancels in e: it only guards fp16 underflow
        grads = [p.grad for p in self.params if p.grad is not None]
        if grads and all(torch.isfinite(g).all() for g in grads):
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
        fisher = self.state["fisher"]
        self.state["fisher"] = squares if fisher is None else [f.add_(s) for f, s in zip(fisher, squares)]
        if self.update_mask:
            values = torch.cat([f.flatten() for f in self.state["fisher"]])
            keep = torch.zeros_like(values, dtype=torch.bool)
            keep[torch.topk(values, int(values.numel() * (1 - self.sparsity))).indices] = True
            self.state["mask"] = list(keep.split([p.numel() for p in self.params]))
            self.state["mask"] = [m.view_as(p) for m, p in zip(self.state["mask"], self.params)]
            self.state["fisher"], self.update_mask = None, False

    @torch.no_grad()
    def _mask_perturbation(self):
        for p, m in zip(self.params, self.state["mask"]):
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
