"""The plugin's Trainer: RecBole's Trainer plus adversarial stages, Mirror Gradient, safe checkpoints.

Adversarial training (``perturb/engine.py``): from epoch ``adv_start_epoch`` on, each batch's loss is
the model's loss plus the configured adversarial terms; epochs before are plain pre-training. The
adversarial stage may switch optimiser (``adv_learner``, e.g. ACAE's Adagrad). A model initialised
from a compatible checkpoint (``init_from_checkpoint``: AMR from VBPR) starts the adversary at
epoch 0. Mirror Gradient (``mirror.py``, ``mirror_gradient: True``) composes with both. It is
RecBole's own training loop throughout, given the adversarial loss as its ``loss_func``; Mirror
Gradient's second step is a step of this trainer on RecBole's own optimiser (``MirrorStep``), and so is
sharpness-aware minimisation (``sharpness.py``: SAM, ASAM, SSAM-F; not combined with Mirror Gradient).

RecBole 1.2.1 pickles its ``Config`` into every checkpoint, which torch >= 2.6 refuses to load by
default. Checkpoints here hold tensors and plain data only (``save_plain_checkpoint`` replaces
RecBole's ``Trainer._save_checkpoint`` when the plugin is imported, so RecBole's own trainers write
them too), are written atomically and are read with ``weights_only=True`` (``checkpoint.py``).
A run keeps two files:

* ``saved_model_file`` (RecBole's): the best model so far, read by ``evaluate()``;
* ``<saved_model_file stem>.last.pth``: the state after the latest validated epoch (model,
  optimiser, early-stopping counters, random number generator states), for ``resume_checkpoint``.

A checkpoint never chooses a path: a resumed run writes its best model beside the ``.last.pth`` it
was given (``<stem>.last.pth`` -> ``<stem>.pth``). A NaN or infinite training loss stops training
with ``TrainingDiverged`` (one line naming the epoch and the checkpoint kept) instead of RecBole's
bare ``ValueError``.

The mixin is combined with RecBole's own trainer classes (``registry.get_trainer``), so RecBole's
built-in models get the same checkpoints (and the adversary, where their trainer uses RecBole's loop).
"""
import contextlib
import contextvars
import os
import secrets

import torch
from recbole.trainer import Trainer
from recbole.utils import early_stopping as recbole_early_stopping
from recbole.utils import set_color

from recbole_robust.errors import RecBoleRobustError, TrainingDiverged
from recbole_robust.model.contract import hook
from recbole_robust.trainer import distributed
from recbole_robust.trainer.mirror import MirrorStep, check_mirror_config
from recbole_robust.perturb.engine import AdversarialLoss, parse_terms
from recbole_robust.trainer.sharpness import SharpnessStep, check_sharpness_config
from recbole_robust.trainer.checkpoint import (
    apply_weights, atomic_save, best_checkpoint_file, check_compatible, last_checkpoint_file, load_checkpoint,
    load_weights, plain, rng_state, set_rng_state,
)


# False while a plugin trainer with ``valid_ties_improve: False`` runs its fit (contextvars: per thread)
_TIES_IMPROVE = contextvars.ContextVar("valid_ties_improve", default=True)


def early_stopping(value, best, cur_step, max_step, bigger=True):
    """RecBole's ``early_stopping``, where a tie with the best score is not an improvement if asked.

    RecBole counts ``value == best`` as an improvement (``>=``); the MG release, like MMRec, does not
    (``>``), so on a plateau it keeps the earlier model and stops. ``registry.py`` puts this function
    where RecBole's ``Trainer.fit`` looks it up; outside a plugin trainer's ``fit`` it is RecBole's.
    """
    if _TIES_IMPROVE.get() or value != best:
        return recbole_early_stopping(value, best, cur_step, max_step, bigger)
    cur_step += 1
    return best, cur_step, cur_step > max_step, False


def check_training_options(trainer_class, config, model):
    """Validate the adversarial and Mirror Gradient settings; returns the adversarial terms.

    Called before a run writes anything, and again by the trainer itself.
    """
    terms = parse_terms(config, model)
    if config["mirror_gradient"]:
        check_mirror_config(config)
    check_sharpness_config(config)
    loop = next(cls for cls in trainer_class.__mro__ if "_train_epoch" in vars(cls) and cls is not RobustMixin)
    if (terms or config["mirror_gradient"] or config["sharpness"]) and loop is not Trainer:
        # the plugin extends Trainer._train_epoch; a trainer with its own loop would ignore it
        raise RecBoleRobustError(
            f"adversarial training, mirror_gradient and sharpness need RecBole's training loop, "
            f"which {loop.__name__} replaces"
        )
    return terms


def check_mixed_precision(config, model, train_data):
    """``enable_amp``: one training batch's loss and backward pass under autocast (bfloat16 on the CPU, float16 on
    CUDA), before the run writes anything, so that a model with a layer that has no half-precision kernel on the
    device (e.g. RecBole's LightGCN on the CPU) is refused with one line instead of failing in its first epoch. The
    random generators and the loader's shuffling state are restored, so training goes on as without the check."""
    if not config["enable_amp"]:
        return

    device = torch.device(config["device"])
    state, loader_state = rng_state(), train_data.generator.get_state()
    try:
        batch = next(iter(train_data)).to(device)
        with torch.autocast(device_type=device.type, enabled=True):
            loss = model.calculate_loss(batch)
        (sum(loss) if isinstance(loss, tuple) else loss).backward()
    except (RuntimeError, NotImplementedError) as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise RecBoleRobustError(f"{config['model']} cannot train with enable_amp (mixed precision) on "
                                 f"{device.type}: {first[:200]}") from None
    finally:
        model.zero_grad(set_to_none=True)
        set_rng_state(state)
        train_data.generator.set_state(loader_state)


class RobustMixin:
    """Adversarial stages, Mirror Gradient and safe, resumable checkpoints for a ``recbole.trainer.Trainer``."""

    def __init__(self, config, model):
        super().__init__(config, model)
        # RecBole names checkpoints <model>-<time to the second>.pth: concurrent runs (Ray trials,
        # parallel seeds) started in the same second would overwrite each other's files
        stem, ext = os.path.splitext(self.saved_model_file)
        self.saved_model_file = f"{stem}-{secrets.token_hex(3)}{ext}"
        self.adv_terms = check_training_options(type(self), config, model)
        self.adv_start_epoch = config["adv_start_epoch"]
        self.adversarial_loss = AdversarialLoss(model, self.adv_terms, config["adv_type"]) if self.adv_terms else None
        if self.adversarial_loss is not None and self.enable_amp and self.enable_scaler:
            # the adversary's gradient is scaled against float16 underflow, by a scaler of its own (RecBole's is
            # local to its loop), as Mirror Gradient's second step and SAM's first pass are
            self.adversarial_loss.scaler = torch.amp.GradScaler(self.device.type)
        self._adv_optimizer = False
        self._adversarial_stage = False
        # the extra steps of a batch, built once: they keep their state (scalers, SAM, SSAM-F mask) across epochs
        self.mirror_step = MirrorStep(self) if config["mirror_gradient"] else None
        self.sharpness_step = SharpnessStep(self) if config["sharpness"] else None
        # ``hook(trainer, epoch_idx, valid_data, verbose)`` after each validation, before the .last.pth state
        # is written; the pipeline attaches them (``valid_attack``: ``robustness.runs.attacked_validation``)
        self.validation_hooks = []
        self.attacked_valid_results = {}  # epoch -> validation metrics under ``valid_attack``
        # several processes (distributed.py): rank 0's weights everywhere, every backward pass's gradients averaged
        self.gradient_sync = None
        if distributed.is_distributed():
            distributed.broadcast_state(model)
            self.gradient_sync = distributed.GradientSync(model.parameters())
            if self.adversarial_loss is not None:
                self.adversarial_loss.reduce = self.gradient_sync.average_list

    def leave_group(self):
        """Back to one process after a multi-process run (rank 0 then attacks and analyses the whole data)."""
        if self.gradient_sync is not None:
            self.gradient_sync.close()
            self.gradient_sync = None
        if self.adversarial_loss is not None:
            self.adversarial_loss.reduce = None
        if getattr(self, "_train_data", None) is not None:
            distributed.unshard_batches(self._train_data)
        distributed.leave_group()

    def _enter_stage(self, epoch_idx):
        """True in the adversarial stage; switches to ``adv_learner`` when the stage begins.

        Early stopping waits for the adversarial stage: during pre-training it is off, and the stage
        starts with fresh patience (the best checkpoint of either stage is kept).
        """
        adversarial = self.adversarial_loss is not None and epoch_idx >= self.adv_start_epoch
        if self.adversarial_loss is not None:
            if not adversarial:
                self.stopping_step = float("inf")
            elif self.stopping_step == float("inf"):
                self.stopping_step, self.cur_step = self.config["stopping_step"], 0
        if adversarial and self.config["adv_learner"] and not self._adv_optimizer:
            self.optimizer = self._build_optimizer(
                learner=self.config["adv_learner"],
                learning_rate=self.config["adv_learning_rate"] or self.learning_rate,
            )
            self._adv_optimizer = True
        if adversarial and not self._adversarial_stage:
            self._adversarial_stage = True
            switch = (f"; optimiser {self.config['adv_learner']}, learning rate "
                      f"{self.config['adv_learning_rate'] or self.learning_rate}" if self.config["adv_learner"] else "")
            self.logger.info(set_color(f"epoch {epoch_idx}: the adversarial stage begins", "yellow") + switch)
        return adversarial

    def log_stages(self):
        """Say in the log which epochs train with the adversary, and warn when it would never start."""
        if self.adversarial_loss is None:
            return
        terms = ", ".join(repr(term) for term in self.adv_terms)
        start = max(self.adv_start_epoch, self.start_epoch)
        if start >= self.epochs:
            self.logger.warning(f"adv_start_epoch {self.adv_start_epoch} is not below epochs {self.epochs}: the "
                                f"adversary ({terms}) never starts, every epoch is plain pre-training")
        elif start > self.start_epoch:
            self.logger.info(f"stages: epochs {self.start_epoch}-{start - 1} pre-train without the adversary "
                             f"(early stopping waits); from epoch {start}, adversarial training with {terms}"
                             + (f", optimiser {self.config['adv_learner']}" if self.config["adv_learner"] else ""))
        else:
            self.logger.info(f"stages: adversarial training from epoch {start} with {terms}")

    def _check_nan(self, loss, name="training loss"):
        """Stop on a NaN or infinite ``loss`` (RecBole's check: NaN only, as a bare ValueError)."""
        if torch.isfinite(loss):
            return
        kept = (f"the best checkpoint so far is kept: {self.saved_model_file}"
                if os.path.exists(self.saved_model_file) else "no checkpoint had been saved yet")
        message = f"{name} is {loss.item()} in epoch {self._epoch}: training stopped, {kept}"
        self.logger.error(message)  # the run's log file says why it ended
        raise TrainingDiverged(message)

    def _train_epoch(self, train_data, epoch_idx, loss_func=None, show_progress=False):
        self._epoch = epoch_idx
        if self.gradient_sync is not None:
            distributed.broadcast_rng()  # the epoch's model-level random draws are rank 0's on every rank
            distributed.shard_batches(train_data)
        if hook(self.model, "pre_epoch_processing"):  # e.g. FREEDOM's edge pruning
            self.model.pre_epoch_processing()
        if loss_func is None and self._enter_stage(epoch_idx):
            loss_func = self.adversarial_loss
        loss_func = loss_func or self.model.calculate_loss
        if self.gradient_sync is not None:
            loss_func = self.gradient_sync.counted(loss_func)  # the rows each rank's gradient is weighted by
        if self.sharpness_step:
            # sharpness-aware minimisation: perturbed by this trainer, stepped by RecBole's loop (sharpness.py)
            step = self.sharpness_step.epoch(loss_func, epoch_idx)
        elif self.mirror_step:
            # Mirror Gradient: RecBole's loop makes the first step of a mirror pair; the second is a step
            # of this trainer, run after RecBole's optimiser step (mirror.py)
            step = self.mirror_step.epoch(loss_func)
        else:
            step = None
        with step.attached() if step else contextlib.nullcontext():
            loss = super()._train_epoch(train_data, epoch_idx, loss_func=step.loss if step else loss_func,
                                        show_progress=show_progress)
        return distributed.average_losses(loss)

    def _checkpoint_state(self, epoch):
        return {
            "config": plain(self.config.final_config_dict),
            "epoch": epoch,
            "cur_step": self.cur_step,
            "best_valid_score": plain(self.best_valid_score),
            "best_valid_result": plain(self.best_valid_result),
            "state_dict": self.model.state_dict(),
            "other_parameter": plain(self.model.other_parameter()),
            "optimizer": self.optimizer.state_dict(),
            "rng": rng_state(),
            "train_loader_rng": self._train_loader_generator().get_state(),
        }

    def _train_loader_generator(self):
        # RecBole's dataloaders shuffle with a torch.Generator of their own; saving its state makes a
        # resumed run see the same batches as an uninterrupted one
        return self._train_data.generator

    def _save_checkpoint(self, epoch, verbose=True, **kwargs):
        if not distributed.is_main():  # rank 0 alone writes
            return
        saved_model_file = kwargs.pop("saved_model_file", self.saved_model_file)
        atomic_save(self._checkpoint_state(epoch), saved_model_file)
        if verbose:
            self.logger.info(set_color("Saving current", "blue") + f": {saved_model_file}")

    def finished(self):
        """True when a resumed run had already ended (its last epoch, or early stopping)."""
        return self.start_epoch >= self.epochs or self.cur_step > self.stopping_step

    def fit(self, train_data, valid_data=None, verbose=True, saved=True, show_progress=False, callback_fn=None):
        """RecBole's ``fit``; after every validation also writes the resumable ``.last.pth`` state.

        A resumed run that had already ended trains nothing and keeps its best checkpoint (RecBole's
        ``fit`` would overwrite it with the last weights).
        """
        if self.finished():
            self.logger.info(f"The run had already ended (epoch {self.start_epoch - 1}): nothing to train; "
                             f"the best checkpoint {self.saved_model_file} is kept")
            return self.best_valid_score, self.best_valid_result
        self._train_data = train_data
        if getattr(self, "_resumed_loader_rng", None) is not None:
            train_data.generator.set_state(self._resumed_loader_rng)
            self._resumed_loader_rng = None

        def after_validation(epoch_idx, valid_score):
            for validation_hook in self.validation_hooks:
                validation_hook(self, epoch_idx, valid_data, verbose)
            if saved and distributed.is_main():
                atomic_save(self._checkpoint_state(epoch_idx), last_checkpoint_file(self.saved_model_file))
            if callback_fn:
                callback_fn(epoch_idx, valid_score)

        token = _TIES_IMPROVE.set(bool(self.config["valid_ties_improve"]))
        try:
            result = super().fit(train_data, valid_data, verbose, saved, show_progress, after_validation)
        finally:
            _TIES_IMPROVE.reset(token)
        if saved and not os.path.exists(self.saved_model_file):
            # no validation ran (e.g. eval_step > epochs, as for Pop's single epoch): keep the final model
            self._save_checkpoint(max(self.train_loss_dict, default=-1), verbose=verbose)
        return result

    @torch.no_grad()
    def evaluate(self, eval_data, load_best_model=True, model_file=None, show_progress=False):
        """RecBole's ``evaluate``; the checkpoint is read here, with ``weights_only=True``."""
        if load_best_model and eval_data:
            checkpoint_file = model_file or self.saved_model_file
            if distributed.is_main() or os.path.isfile(checkpoint_file):
                load_weights(self.model, checkpoint_file, self.device)
            distributed.broadcast_state(self.model)  # several processes: rank 0's file on every rank
            self.logger.info(f"Loading model structure and parameters from {checkpoint_file}")
        with distributed.sharded_evaluation(self, eval_data):  # several processes: each rank scores a share
            return super().evaluate(eval_data, load_best_model=False, show_progress=show_progress)

    def resume_checkpoint(self, resume_file):
        """Continue training from a checkpoint written by this trainer (best or ``.last.pth``).

        The run's files are those beside ``resume_file`` (never a path stored in it): the best model
        is ``<stem>.pth`` for ``<stem>.last.pth``. The random number generator states are restored
        on the CPU whatever the device (``torch.set_rng_state`` takes CPU byte tensors).
        """
        checkpoint = load_checkpoint(resume_file, "cpu", model=self.config["model"])
        check_compatible(resume_file, checkpoint, self.config, self.model, resume=True)
        apply_weights(self.model, checkpoint)
        self.start_epoch = checkpoint["epoch"] + 1
        self._enter_stage(self.start_epoch)  # the saved optimiser state is of that stage's optimiser
        self.optimizer.load_state_dict(checkpoint["optimizer"])
        self.cur_step = checkpoint["cur_step"]
        self.best_valid_score = checkpoint["best_valid_score"]
        self.best_valid_result = checkpoint.get("best_valid_result")
        self.saved_model_file = best_checkpoint_file(resume_file)
        if "rng" in checkpoint:
            set_rng_state(checkpoint["rng"])
        self._resumed_loader_rng = checkpoint.get("train_loader_rng")
        self.logger.info(f"Checkpoint {resume_file} loaded. Resume training from epoch {self.start_epoch}")


class RobustTrainer(RobustMixin, Trainer):
    """Trainer of the plugin's models, and of RecBole's models that use RecBole's base Trainer."""
