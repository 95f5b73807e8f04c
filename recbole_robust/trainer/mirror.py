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

from recbole_robust import settings
from recbole_robust.errors import RecBoleRobustError


SETTINGS = {
    "mirror_gradient": settings.BOOL,
    "mg_alpha1": (settings.is_number, "a number"),
    "mg_alpha2": settings.NON_NEGATIVE,
    "mg_interval": settings.POSITIVE_INT,
}
"""Mirror Gradient's settings (``config.SETTINGS``); ``check_mirror_config`` adds the rule between them."""


def check_mirror_config(config):
    """``mg_*`` of a run with Mirror Gradient: each value (the schema), and alpha1 > alpha2 (section 4)."""
    settings.check_config(config, SETTINGS)
    alpha1, alpha2 = config["mg_alpha1"], config["mg_alpha2"]
    if alpha1 <= alpha2:
        raise RecBoleRobustError(f"mg_alpha1 must be greater than mg_alpha2, got alpha1={alpha1} <= alpha2={alpha2}")


class MirrorStep:
    """Mirror Gradient of ``trainer``, built once with the trainer (see the module docstring); ``epoch``
    attaches it to one epoch's loss."""

    def __init__(self, trainer):
        config = trainer.config
        self.trainer = trainer
        self.alpha1, self.alpha2, self.interval = config["mg_alpha1"], config["mg_alpha2"], config["mg_interval"]
        self.loss_func, self.batch_idx, self.interaction = None, -1, None
        self._in_second_step = False
        device = trainer.device if isinstance(trainer.device, torch.device) else torch.device(trainer.device)
        self.device_type = device.type
        self.scaler = None  # made at the first epoch, with the trainer's enable_scaler; kept across epochs

    def epoch(self, loss_func):
        """Start an epoch whose loss is ``loss_func``: batches are counted from 0 again."""
        self.loss_func, self.batch_idx, self.interaction = loss_func, -1, None
        if self.scaler is None:
            self.scaler = torch.amp.GradScaler(self.device_type, enabled=bool(self.trainer.enable_scaler))
        return self

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
