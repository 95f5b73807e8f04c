"""Checkpoints: plain-data state (``torch.load(weights_only=True)`` reads it), written atomically,
checked before use, and the one way to put saved weights into a model.

* ``save_plain_checkpoint``: RecBole's ``Trainer._save_checkpoint`` as the plugin replaces it (same keys,
  the ``Config`` as a dict); the plugin's own trainers write ``RobustMixin._checkpoint_state`` with
  ``atomic_save``, which adds the optimiser, random number generator and loader states;
* ``load_checkpoint``: a file, refused with one line unless it is a RecBole checkpoint (of ``model``);
* ``check_compatible`` / ``check_resumable``: it fits this run's data, model and shapes (and, to
  resume, holds a well-formed training state);
* ``load_weights`` / ``apply_weights``: the model's tensors and other parameters from it, used
  wherever best or saved weights are loaded (evaluation, resume, comparisons, reports);
* ``init_from_checkpoint``: the tensors a compatible model shares (AMR from VBPR);
* ``best_checkpoint_file`` / ``last_checkpoint_file``: a run's two files, derived from each other,
  never read from a checkpoint.
"""
import enum
import os
import random

import numpy as np
import torch
from recbole.utils import set_color

from recbole_robust.errors import RecBoleRobustError
from recbole_robust.utils import atomic_write


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
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": pos, "has_gauss": has_gauss,
                  "cached_gaussian": cached},
        "python": {"version": version, "state": list(internal), "gauss": gauss},
    }


def set_rng_state(state):
    """Restore ``rng_state()``; the states are CPU byte tensors whatever device the run uses."""
    torch.set_rng_state(state["torch"].cpu())
    if state.get("cuda") and torch.cuda.is_available():
        # one state per GPU of the saving run; a run resumed with fewer visible GPUs restores those it has (RecBole's
        # set_rng_state_all would fail on a device index that is not there), one with more keeps the others' own
        for index, cuda_state in enumerate(state["cuda"][:torch.cuda.device_count()]):
            torch.cuda.set_rng_state(cuda_state.cpu(), index)
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    p = state["python"]
    random.setstate((p["version"], tuple(p["state"]), p["gauss"]))


def atomic_save(obj, path):
    """``torch.save`` to a temporary file beside ``path``, then rename it into place."""
    atomic_write(path, lambda tmp: torch.save(obj, tmp))


def save_plain_checkpoint(self, epoch, verbose=True, **kwargs):
    """``Trainer._save_checkpoint`` of RecBole, storing plain data (``weights_only=True`` loads it).

    Same keys as RecBole's, with the ``Config`` stored as a dict; written atomically. The plugin
    puts it on ``recbole.trainer.Trainer`` (``registry.py``), so RecBole's own trainers use it.
    """
    if not self.config["single_spec"] and self.config["local_rank"] != 0:
        return
    saved_model_file = kwargs.pop("saved_model_file", self.saved_model_file)
    atomic_save({
        "config": plain(self.config.final_config_dict),
        "epoch": epoch,
        "cur_step": self.cur_step,
        "best_valid_score": plain(self.best_valid_score),
        "state_dict": self.model.state_dict(),
        "other_parameter": plain(self.model.other_parameter()),
        "optimizer": self.optimizer.state_dict(),
    }, saved_model_file)
    if verbose:
        self.logger.info(set_color("Saving current", "blue") + f": {saved_model_file}")


def load_checkpoint(path, device="cpu", model=None):
    """Load a checkpoint with ``weights_only=True``, optionally checking it is of ``model``.

    A missing, foreign or malformed file (a bare tensor, a plain state_dict, no ``config``) is a
    one-line ``RecBoleRobustError``.
    """
    if not os.path.isfile(path):
        raise RecBoleRobustError(f"checkpoint {path} not found")
    try:
        checkpoint = torch.load(path, map_location=device, weights_only=True)
    except Exception as e:  # torch raises UnpicklingError, RuntimeError, EOFError ... for foreign files
        message = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise RecBoleRobustError(f"checkpoint {path} cannot be loaded with weights_only=True: {message}") from None
    if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get("config"), dict) \
            or not isinstance(checkpoint.get("state_dict"), dict) or "model" not in checkpoint["config"]:
        what = type(checkpoint).__name__ if not isinstance(checkpoint, dict) else "a dict without config and state_dict"
        raise RecBoleRobustError(f"checkpoint {path} is not a RecBole checkpoint (it holds {what})")
    if model is not None and str(checkpoint["config"]["model"]).lower() != model.lower():
        raise RecBoleRobustError(f"checkpoint {path} is of model {checkpoint['config']['model']}, not {model}")
    return checkpoint


COMPATIBLE_SETTINGS = ("dataset", "embedding_size")


def check_compatible(path, checkpoint, config, model, resume=False):
    """A checkpoint can be evaluated (``resume``: continued) by this run: same data, model and shapes."""
    saved = checkpoint["config"]
    for key in COMPATIBLE_SETTINGS + (("learner",) if resume else ()):
        if key in saved and saved[key] != plain(config[key]):
            raise RecBoleRobustError(
                f"checkpoint {path} was trained with {key}={saved[key]}, this run has {key}={config[key]}"
            )
    own = model.state_dict()
    theirs = checkpoint["state_dict"]
    missing = sorted(set(own) - set(theirs))
    if missing:
        raise RecBoleRobustError(f"checkpoint {path} lacks tensors of {type(model).__name__}: {', '.join(missing[:3])}")
    extra = sorted(set(theirs) - set(own))
    if extra:
        raise RecBoleRobustError(f"checkpoint {path} holds tensors {type(model).__name__} does not have: "
                                 f"{', '.join(map(str, extra[:3]))}")
    for name, tensor in own.items():
        if not isinstance(theirs[name], torch.Tensor):
            raise RecBoleRobustError(f"checkpoint {path}: {name} is a {type(theirs[name]).__name__}, not a tensor")
        if tuple(theirs[name].shape) != tuple(tensor.shape):
            raise RecBoleRobustError(
                f"checkpoint {path}: {name} has shape {tuple(theirs[name].shape)}, the model has {tuple(tensor.shape)}"
            )
    if resume:
        check_resumable(path, checkpoint)


def _optimizer_states(state):
    """The optimiser state dicts of a checkpoint: one, or one per player (``gan.PlayerOptimizers``)."""
    if isinstance(state, dict) and "param_groups" in state:
        return [state]
    return list(state.values()) if isinstance(state, dict) and state else [state]


def _structure_problem(saved, reference, where="rng"):
    """Where ``saved`` differs in form from ``reference`` (keys, tensor shapes and dtypes, list lengths),
    or ``None``. numpy accepts key arrays of any length, so the form is checked, not only loaded."""
    if isinstance(reference, dict):
        if not isinstance(saved, dict) or set(saved) - {"cuda"} != set(reference) - {"cuda"}:
            return f"{where} has keys {sorted(saved) if isinstance(saved, dict) else type(saved).__name__}"
        return next((p for k in reference if k != "cuda"
                     for p in [_structure_problem(saved[k], reference[k], f"{where}.{k}")] if p), None)
    if isinstance(reference, torch.Tensor):
        if not isinstance(saved, torch.Tensor) or saved.shape != reference.shape or saved.dtype != reference.dtype:
            return f"{where} is not a {reference.dtype} tensor of shape {tuple(reference.shape)}"
        return None
    if isinstance(reference, (list, tuple)):
        return None if isinstance(saved, (list, tuple)) and len(saved) == len(reference) else \
            f"{where} is not a list of {len(reference)}"
    return None


def check_resumable(path, checkpoint):
    """The training state of a checkpoint that ``--resume`` continues is complete and well-formed."""
    for key in ("epoch", "cur_step"):
        value = checkpoint.get(key)
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise RecBoleRobustError(f"--resume {path}: '{key}' must be an integer >= 0, got {value!r} "
                                     "(not a checkpoint of a run to continue)")
    for state in _optimizer_states(checkpoint.get("optimizer")):
        groups = state.get("param_groups") if isinstance(state, dict) else None
        if not isinstance(groups, list) or not groups or not isinstance(state.get("state"), dict) \
                or not all(isinstance(g, dict) and isinstance(g.get("params"), list) and g["params"] for g in groups):
            raise RecBoleRobustError(f"--resume {path}: the optimiser state is missing or malformed "
                                     "(no parameter groups)")
    if "rng" in checkpoint:
        current = rng_state()
        problem = _structure_problem(checkpoint["rng"], current)
        if problem:
            raise RecBoleRobustError(f"--resume {path}: malformed random number generator state ({problem})")
        try:
            set_rng_state(checkpoint["rng"])  # tried on the real generators, then put back
        except (KeyError, TypeError, ValueError, IndexError, AttributeError, RuntimeError) as e:
            raise RecBoleRobustError(f"--resume {path}: malformed random number generator state "
                                     f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})") from None
        finally:
            set_rng_state(current)


def init_from_checkpoint(model, path, device="cpu"):
    """Copy into ``model`` the tensors of a checkpoint it shares (same names and shapes).

    Used to start a model from a compatible pre-trained one (AMR from VBPR, ACAE from CAE).
    Returns ``(shared names, names the checkpoint lacks)``; sharing nothing is an error.
    """
    checkpoint = load_checkpoint(path, device)
    own = model.state_dict()
    shared = {k: v for k, v in checkpoint["state_dict"].items() if k in own and own[k].shape == v.shape}
    if not shared:
        raise RecBoleRobustError(
            f"checkpoint {path} ({checkpoint['config']['model']}) shares no parameters with {type(model).__name__}"
        )
    model.load_state_dict(shared, strict=False)
    return sorted(shared), sorted(set(own) - set(shared))


def last_checkpoint_file(saved_model_file):
    stem, ext = os.path.splitext(saved_model_file)
    return f"{stem}.last{ext or '.pth'}"


def best_checkpoint_file(resume_file):
    """The best-model file of the run a checkpoint belongs to, beside it: ``X.last.pth`` -> ``X.pth``."""
    stem, ext = os.path.splitext(os.path.abspath(resume_file))
    return f"{stem[:-len('.last')]}{ext}" if stem.endswith(".last") else f"{stem}{ext}"


def apply_weights(model, checkpoint):
    """Put a loaded checkpoint's tensors and other parameters into ``model``; returns the checkpoint."""
    model.load_state_dict(checkpoint["state_dict"])
    model.load_other_parameter(checkpoint.get("other_parameter"))
    return checkpoint


def load_weights(model, path, device="cpu"):
    """``model`` with the weights of checkpoint ``path`` (read with ``weights_only=True``, of ``model``'s
    class); returns the checkpoint."""
    return apply_weights(model, load_checkpoint(path, device, model=type(model).__name__))
