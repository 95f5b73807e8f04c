"""Every private RecBole name the plugin patches or calls, in one place, checked at import.

RecBole has no plugin API, so ``registry.py`` wraps a few of its private methods and the trainer
extends others. A RecBole release that renames one of them, or changes its arguments, would make the
plugin misbehave silently; ``check()`` (run when ``recbole_robust`` is imported) compares each name
listed here with the signature it was written against and fails with one line naming the first
difference. Code that touches a private RecBole name must take it from this module.
"""
import inspect
import re

import recbole
import recbole.data.utils
import recbole.trainer.trainer
from recbole.config import Config
from recbole.data.dataloader.abstract_dataloader import AbstractDataLoader
from recbole.data.dataset import Dataset
from recbole.evaluator import Evaluator
from recbole.evaluator.collector import DataStruct
from recbole.sampler import Sampler
from recbole.trainer import Trainer

from recbole_robust.errors import RecBoleRobustError

RECBOLE_VERSION = "1.2.1"

# (owner, attribute name, parameter names it must take, what the plugin does with it)
PRIVATE_NAMES = (
    (Config, "_load_internal_config_dict", ("self", "model", "model_class", "dataset"),
     "wrapped: adds the plugin's default files below the user's settings"),
    (Config, "_set_default_parameters", ("self",), "wrapped: resolves plugin datasets"),
    (Config, "_update_internal_config_dict", ("self", "file"), "called: reads a plugin default file"),
    (Config, "_build_yaml_loader", ("self",), "called: RecBole's YAML loader for the plugin's files"),
    (Config, "_convert_config_dict", ("self", "config_dict"),
     "overridden by PluginConfig: values are parsed as literals, never evaluated"),
    (Config, "_load_cmd_line", ("self",), "overridden by PluginConfig: the CLI parses the command line"),
    (Config, "_merge_external_config_dict", ("self",), "extended by PluginConfig: validates user settings"),
    (Config, "_init_device", ("self",), "extended by PluginConfig: a worker of --nproc joins its process group"),
    (Dataset, "_load_data", ("self", "token", "dataset_path"), "wrapped: builds a plugin dataset on first load"),
    (Sampler, "_uni_sampling", ("self", "sample_num"),
     "overridden by TrainingItemSampler: uniform negatives among the training items (negatives_from: train)"),
    (Trainer, "_save_checkpoint", ("self", "epoch", "verbose", "kwargs"),
     "replaced: tensors and plain data only, written atomically"),
    (Trainer, "_train_epoch", ("self", "train_data", "epoch_idx", "loss_func", "show_progress"),
     "extended: adversarial stages, Mirror Gradient"),
    (Trainer, "_build_optimizer", ("self", "kwargs"), "called: the adversarial stage's optimiser"),
    (Trainer, "_check_nan", ("self", "loss"), "overridden: NaN or Inf stops training with one line"),
    (recbole.data.utils, "get_dataloader", ("config", "phase"),
     "wrapped: user batches for plugin auto-encoders, budget-batched full-sort evaluation"),
    (recbole.trainer.trainer, "get_tensorboard", ("logger",),
     "replaced in the worker processes of --nproc with rank > 0: they write no TensorBoard files"),
    (recbole.trainer.trainer, "early_stopping", ("value", "best", "cur_step", "max_step", "bigger"),
     "replaced where Trainer.fit looks it up: ties optionally count as no improvement"),
    (Trainer, "_generate_train_loss_output", ("self", "epoch_idx", "s_time", "e_time", "losses"),
     "overridden by GANTrainer: one loss per player"),
    (Dataset, "_change_feat_format", ("self",), "called: the held-out users' split back to Interactions"),
    (AbstractDataLoader, "_init_batch_size_and_step", ("self",),
     "overridden: users per batch of the plugin's full-sort and held-out user loaders"),
    (Trainer, "_full_sort_batch_eval", ("self", "batched_data"),
     "replaced on one trainer for one evaluation of several processes: each rank scores its share of the batches"),
    (Trainer, "_neg_sample_batch_eval", ("self", "batched_data"), "as _full_sort_batch_eval"),
    (Evaluator, "evaluate", ("self", "dataobject"),
     "replaced on one trainer's evaluator for one call (compare.py): captures the data for per-user metrics"),
)

# attributes of RecBole objects the plugin reads or sets: (owner, names); each must be assigned as
# ``self.<name> =`` in the owner's source
TRAINER_ATTRIBUTES = ("saved_model_file", "start_epoch", "cur_step", "best_valid_score", "best_valid_result",
                      "optimizer", "stopping_step", "clip_grad_norm", "enable_scaler", "enable_amp",
                      "train_loss_dict", "epochs")
PRIVATE_ATTRIBUTES = (
    (Trainer, TRAINER_ATTRIBUTES),
    (AbstractDataLoader, ("_dataset",)),
    (DataStruct, ("_data_dict",)),  # several processes: the collected batches of all ranks gathered into it
)

def check(version=None, names=PRIVATE_NAMES, attributes=PRIVATE_ATTRIBUTES):
    """Raise ``RecBoleRobustError`` (one line) if RecBole is not the version the plugin hooks into."""
    version = recbole.__version__ if version is None else version
    if version != RECBOLE_VERSION:
        raise RecBoleRobustError(
            f"recbole-robust hooks into RecBole {RECBOLE_VERSION}, but RecBole {version} is installed "
            f"(pip install recbole=={RECBOLE_VERSION})"
        )
    for owner, name, params, _ in names:
        label = f"{getattr(owner, '__name__', owner)}.{name}"
        function = getattr(owner, name, None)
        if not callable(function):
            raise RecBoleRobustError(f"RecBole {version} has no {label}, which recbole-robust needs")
        found = tuple(inspect.signature(function).parameters)
        if found != params:
            raise RecBoleRobustError(
                f"RecBole's {label} takes ({', '.join(found)}), recbole-robust expects ({', '.join(params)})"
            )
    for owner, attrs in attributes:
        source = "".join(inspect.getsource(cls) for cls in owner.__mro__ if cls.__module__.startswith("recbole."))
        for attr in attrs:
            if not re.search(rf"self\.{attr}\s*(:[^=]+)?=", source):
                raise RecBoleRobustError(f"RecBole {version}'s {owner.__name__} no longer sets {attr}, "
                                         "which recbole-robust uses")

