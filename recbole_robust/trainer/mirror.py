"""Mirror Gradient (MG paper, Algorithm 1), as in the authors' released trainer.

On batches with ``batch_idx % mg_interval == 0``:

    backward(alpha1 * L); optimiser step; recompute L on the same batch (same sampled negatives);
    backward(-alpha2 * L); optimiser step

and a normal step on the others. ``alpha1 > alpha2 >= 0`` (section 4: with alpha1 = alpha2 only the
gradient-norm regulariser is left; alpha1 < alpha2 makes the main term an ascent) and
``mg_interval >= 1``.

``MirrorStep`` is a step of the trainer, on the optimiser RecBole built (any learner): the optimiser
is never wrapped, so LR schedulers, gradient clipping and the gradient scaler see a real
``torch.optim.Optimizer``. RecBole's own loop makes the first step of a pair: ``loss`` returns
``alpha1 * L`` on mirror batches and remembers the batch, and RecBole clips, scales and steps as
usual. A step post-hook on the optimiser then makes the second step: ``-alpha2 * L`` on the same
batch, clipped with the trainer's ``clip_grad_norm`` and, with ``enable_scaler``, scaled by a
``GradScaler`` of its own (RecBole's scaler is local to its loop). A first step the scaler skips
(inf/NaN gradients) calls no hook, so that batch makes no pair.
"""
import contextlib

import torch
from torch.nn.utils import clip_grad_norm_

from recbole_robust.errors import RecBoleRobustError


def check_mirror_config(alpha1, alpha2, interval):
    if not isinstance(interval, int) or isinstance(interval, bool) or interval < 1:
        raise RecBoleRobustError(f"mg_interval must be an integer >= 1, got {interval!r}")
    for name, value in (("mg_alpha1", alpha1), ("mg_alpha2", alpha2)):
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise RecBoleRobustError(f"{name} must be a number, got {value!r}")
    if alpha2 < 0:
        raise RecBoleRobustError(f"mg_alpha2 must be >= 0, got {alpha2}")
    if alpha1 <= alpha2:
        raise RecBoleRobustError(f"mg_alpha1 must be greater than mg_alpha2, got alpha1={alpha1} <= alpha2={alpha2}")


class MirrorStep:
    """Mirror Gradient for one epoch of ``trainer`` (see the module docstring)."""

    def __init__(self, trainer, loss_func):
        config = trainer.config
        check_mirror_config(config["mg_alpha1"], config["mg_alpha2"], config["mg_interval"])
        self.trainer, self.loss_func = trainer, loss_func
        self.alpha1, self.alpha2, self.interval = config["mg_alpha1"], config["mg_alpha2"], config["mg_interval"]
        self.batch_idx = -1
        self.interaction = None
        self._in_second_step = False
        device = trainer.device if isinstance(trainer.device, torch.device) else torch.device(trainer.device)
        self.device_type = device.type
        if getattr(trainer, "_mirror_scaler", None) is None:
            trainer._mirror_scaler = torch.amp.GradScaler(device.type, enabled=bool(trainer.enable_scaler))
        self.scaler = trainer._mirror_scaler

    def mirror_batch(self):
        return self.batch_idx % self.interval == 0

    def loss(self, interaction):
        """The loss RecBole's loop backpropagates: ``alpha1 * L`` on mirror batches, ``L`` otherwise."""
        self.batch_idx += 1
        self.interaction = interaction
        loss = self.loss_func(interaction)
        if not self.mirror_batch():
            return loss
        if isinstance(loss, tuple):
            return tuple(self.alpha1 * part for part in loss)
        return self.alpha1 * loss

    def _second_step(self, optimizer, args, kwargs):
        if self._in_second_step or not self.mirror_batch():
            return
        self._in_second_step = True
        try:
            trainer = self.trainer
            optimizer.zero_grad()
            with torch.enable_grad(), torch.autocast(device_type=self.device_type, enabled=bool(trainer.enable_amp)):
                loss = self.loss_func(self.interaction)
                loss = sum(loss) if isinstance(loss, tuple) else loss
            self.scaler.scale(-self.alpha2 * loss).backward()
            if trainer.clip_grad_norm:
                self.scaler.unscale_(optimizer)
                clip_grad_norm_(trainer.model.parameters(), **trainer.clip_grad_norm)
            self.scaler.step(optimizer)
            self.scaler.update()
        finally:
            self._in_second_step = False

    @contextlib.contextmanager
    def attached(self):
        """Hook the second step onto the trainer's optimiser for the duration of an epoch."""
        handle = self.trainer.optimizer.register_step_post_hook(self._second_step)
        try:
            yield self
        finally:
            handle.remove()
