"""The plugin's Trainer: RecBole's Trainer with checkpoints that load with ``weights_only=True``.

RecBole 1.2.1 pickles its ``Config`` into every checkpoint, which torch >= 2.6 refuses to load by
default, so its own ``evaluate()`` fails after training. ``SafeCheckpointMixin`` stores tensors and
plain data only, writes atomically (temporary file + rename) and keeps two files per run:

* ``saved_model_file`` (RecBole's): the best model so far, read by ``evaluate()``;
* ``<saved_model_file stem>.last.pth``: the state after the latest validated epoch (model,
  optimiser, early-stopping counters, random number generator states), for ``resume_checkpoint``.

The mixin is combined with RecBole's own trainer classes (``registry.get_trainer``), so RecBole's
built-in models get safe checkpoints too.
"""
import enum
import os
import random

import numpy as np
import torch
from recbole.trainer import Trainer
from recbole.utils import set_color

from recbole_robust.errors import RecBoleRobustError


def plain(value):
    """``value`` as data that ``torch.load(weights_only=True)`` accepts (numbers, strings, containers)."""
    if isinstance(value, np.generic):  # before float: np.float64 is a float subclass
        return value.item()
    if value is None or isinstance(value, (bool, int, float, str, torch.Tensor)):
        return value
    if isinstance(value, np.ndarray):
        return torch.from_numpy(value)
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [plain(v) for v in value]
    if isinstance(value, enum.Enum):
        return value.name
    return str(value)


def rng_state():
    _, keys, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": pos, "has_gauss": has_gauss,
                  "cached_gaussian": cached},
        "python": {"version": version, "state": list(internal), "gauss": gauss},
    }


def set_rng_state(state):
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    p = state["python"]
    random.setstate((p["version"], tuple(p["state"]), p["gauss"]))


def atomic_save(obj, path):
    """``torch.save`` to a temporary file beside ``path``, then rename it into place."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    tmp = f"{path}.tmp{os.getpid()}"
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def load_checkpoint(path, device="cpu", model=None):
    """Load a plugin checkpoint with ``weights_only=True``, optionally checking it is of ``model``.

    A missing, foreign or mismatched file is a one-line ``RecBoleRobustError``.
    """
    if not os.path.isfile(path):
        raise RecBoleRobustError(f"checkpoint {path} not found")
    try:
        checkpoint = torch.load(path, map_location=device, weights_only=True)
    except Exception as e:  # torch raises UnpicklingError, RuntimeError, EOFError ... for foreign files
        message = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise RecBoleRobustError(f"checkpoint {path} cannot be loaded with weights_only=True: {message}") from None
    if model is not None and checkpoint["config"]["model"].lower() != model.lower():
        raise RecBoleRobustError(f"checkpoint {path} is of model {checkpoint['config']['model']}, not {model}")
    return checkpoint


def last_checkpoint_file(saved_model_file):
    stem, ext = os.path.splitext(saved_model_file)
    return f"{stem}.last{ext or '.pth'}"


class SafeCheckpointMixin:
    """Safe, atomic, resumable checkpoints for any subclass of ``recbole.trainer.Trainer``."""

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
            "best_model_file": os.path.abspath(self.saved_model_file),
        }

    def _train_loader_generator(self):
        # RecBole's dataloaders shuffle with a torch.Generator of their own; saving its state makes a
        # resumed run see the same batches as an uninterrupted one
        return self._train_data.generator

    def _save_checkpoint(self, epoch, verbose=True, **kwargs):
        saved_model_file = kwargs.pop("saved_model_file", self.saved_model_file)
        atomic_save(self._checkpoint_state(epoch), saved_model_file)
        if verbose:
            self.logger.info(set_color("Saving current", "blue") + f": {saved_model_file}")

    def fit(self, train_data, valid_data=None, verbose=True, saved=True, show_progress=False, callback_fn=None):
        """RecBole's ``fit``; after every validation also writes the resumable ``.last.pth`` state."""

        self._train_data = train_data
        if getattr(self, "_resumed_loader_rng", None) is not None:
            train_data.generator.set_state(self._resumed_loader_rng)
            self._resumed_loader_rng = None

        def after_validation(epoch_idx, valid_score):
            if saved:
                atomic_save(self._checkpoint_state(epoch_idx), last_checkpoint_file(self.saved_model_file))
            if callback_fn:
                callback_fn(epoch_idx, valid_score)

        return super().fit(train_data, valid_data, verbose, saved, show_progress, after_validation)

    def resume_checkpoint(self, resume_file):
        """Continue training from a checkpoint written by this trainer (best or ``.last.pth``)."""
        checkpoint = load_checkpoint(resume_file, self.device, model=self.config["model"])
        self.model.load_state_dict(checkpoint["state_dict"])
        self.model.load_other_parameter(checkpoint.get("other_parameter"))
        self.optimizer.load_state_dict(checkpoint["optimizer"])
        self.start_epoch = checkpoint["epoch"] + 1
        self.cur_step = checkpoint["cur_step"]
        self.best_valid_score = checkpoint["best_valid_score"]
        self.best_valid_result = checkpoint["best_valid_result"]
        self.saved_model_file = checkpoint["best_model_file"]
        set_rng_state(checkpoint["rng"])
        self._resumed_loader_rng = checkpoint["train_loader_rng"]
        self.logger.info(f"Checkpoint {resume_file} loaded. Resume training from epoch {self.start_epoch}")


class RobustTrainer(SafeCheckpointMixin, Trainer):
    """Trainer of the plugin's models, and of RecBole's models that use RecBole's base Trainer."""
