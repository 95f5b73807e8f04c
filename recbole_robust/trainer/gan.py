"""Trainer of GAN-style models (VAEGAN): one optimiser per player, safe checkpoints, per-player losses.

The model names its players and their parameters (``players()``: e.g. ``{"G": ..., "T": ..., "D": ...}``;
the generator is ``G``, every other player is a discriminator) and provides the losses; the trainer owns the optimisers and the order of the updates. For each batch:

1. ``batch = model.generator_batch(users)``: one pass of the generator;
2. every discriminator ``p`` in ``model.discriminator_losses(batch)`` (computed from the generator's
   outputs detached) takes one step of its own optimiser;
3. the generator takes one step on ``model.generator_loss(batch, alpha)`` against the updated
   discriminators, whose parameters are frozen meanwhile (no gradient is computed for them);
   ``alpha = model.alpha(epochs done, fractional)`` is the annealed weight of the prior term.

The training loader is RecBole's ``UserDataLoader`` (the model sets ``user_dataloader = True``): a
batch is ``train_batch_size`` user ids, shuffled each epoch with the loader's generator (saved in
checkpoints, so a resumed run sees the same batches). The epoch's
training loss (RecBole's ``train_loss_dict``, the log line) is G's; the log line also shows each
player's loss and alpha, all kept per epoch in ``loss_history``. A NaN or infinite loss stops training
with a ``TrainingDiverged`` error naming the player and the best checkpoint kept so far.

Mixed precision (RecBole's ``enable_amp`` / ``enable_scaler``): the players' forward passes run under autocast, and
each player's backward pass and step go through a gradient scaler of its own (a skipped step of one player does
not lower another's scale).
"""
import torch
from recbole.trainer import Trainer
from recbole.utils import set_color
from tqdm import tqdm

from recbole_robust.trainer.trainer import RobustMixin


class PlayerOptimizers:
    """The players' optimisers, saved and restored together (``state_dict`` keyed by player)."""

    def __init__(self, optimizers):
        self.optimizers = optimizers

    def __getitem__(self, player):
        return self.optimizers[player]

    def state_dict(self):
        return {player: optimizer.state_dict() for player, optimizer in self.optimizers.items()}

    def load_state_dict(self, state):
        for player, optimizer in self.optimizers.items():
            optimizer.load_state_dict(state[player])


class GANTrainer(RobustMixin, Trainer):
    """Alternating updates of a model's players (see the module docstring)."""

    def __init__(self, config, model):
        super().__init__(config, model)
        self.loss_history = {}
        # enable_amp: the players' forward passes under autocast; enable_scaler: a gradient scaler per player
        self.scalers = {player: torch.amp.GradScaler(self.device.type, enabled=bool(self.enable_scaler))
                        for player in model.players()}

    def _autocast(self):
        return torch.autocast(device_type=self.device.type, enabled=bool(self.enable_amp))

    def _build_optimizer(self, **kwargs):
        players = self.model.players()
        return PlayerOptimizers({
            player: super(GANTrainer, self)._build_optimizer(params=params, **kwargs)
            for player, params in players.items()
        })

    def _step(self, player, loss, params):
        self._check_nan(loss, f"{player} loss")  # before backward: a NaN loss never reaches the weights
        optimizer, scaler = self.optimizer[player], self.scalers[player]
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        if self.clip_grad_norm:
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(params, **self.clip_grad_norm)
        scaler.step(optimizer)
        scaler.update()

    def _train_epoch(self, train_data, epoch_idx, loss_func=None, show_progress=False):
        self._epoch = epoch_idx
        self.model.train()
        players = self.model.players()
        n_batches, sums, alpha = len(train_data), {}, 0.0
        iter_data = (
            tqdm(train_data, total=n_batches, ncols=100, desc=set_color(f"Train {epoch_idx:>5}", "pink"))
            if show_progress else train_data
        )
        for batch_idx, interaction in enumerate(iter_data):
            with self._autocast():
                batch = self.model.generator_batch(interaction[self.model.USER_ID].to(self.device))
                discriminator_losses = self.model.discriminator_losses(batch)
            losses = {}
            for player, loss in discriminator_losses.items():
                self._step(player, loss, players[player])
                losses[player] = loss.detach()
            alpha = self.model.alpha(epoch_idx + (batch_idx + 1) / n_batches)
            frozen = [p for player, params in players.items() if player != "G" for p in params]
            for p in frozen:
                p.requires_grad_(False)
            try:
                with self._autocast():
                    loss, parts = self.model.generator_loss(batch, alpha)
                self._step("G", loss, players["G"])
            finally:
                for p in frozen:
                    p.requires_grad_(True)
            losses["G"] = loss.detach()
            losses.update({f"G.{name}": value.detach() for name, value in parts.items()})
            # the batch's losses for the log reach the host in one transfer, not one per player and part
            losses = dict(zip(losses, torch.stack([v.float().reshape(()) for v in losses.values()]).tolist()))
            for name, value in losses.items():
                sums[name] = sums.get(name, 0.0) + value
            if show_progress:
                iter_data.set_postfix_str(set_color(f"G: {losses['G']:.4f}", "yellow"))
        history = {name: value / n_batches for name, value in sums.items()}
        history["alpha"] = alpha
        self.loss_history[epoch_idx] = history
        return history["G"]

    def _generate_train_loss_output(self, epoch_idx, s_time, e_time, losses):
        des = self.config["loss_decimal_place"] or 4
        parts = ", ".join(
            set_color(name, "blue") + f": {value:.{des}f}" for name, value in self.loss_history[epoch_idx].items()
        )
        return set_color(f"epoch {epoch_idx} training", "green") + f" [{set_color('time', 'blue')}: " \
            f"{e_time - s_time:.2f}s, {parts}]"
