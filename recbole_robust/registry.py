"""Plug recbole_robust into RecBole's own lookups (RecBole has no registry object).

``register()`` runs once, when ``recbole_robust`` is imported. It first checks the RecBole internals
it relies on (``recbole_internals.py``: version and signatures, one line if they differ), then:

* **models**: ``recbole.utils.get_model(name)`` imports ``recbole.model.<submodule>.<name lower>``;
  each plugin model module is placed in ``sys.modules`` under
  ``recbole.model.general_recommender.<name lower>``, so RecBole finds it there;
* **trainers**: ``recbole.utils.get_trainer`` looks up ``recbole.trainer.<Name>Trainer``; it is set to
  the trainer the model names as its ``trainer_class`` (default ``RobustTrainer``);
* **datasets**: ``recbole.data.create_dataset`` looks up ``recbole.data.dataset.<Name>Dataset``; it is
  set to ``GraphDataset`` (a split's graphs, ``data/graphs.py``) for every plugin model, ``MultimodalDataset``
  (that, and item content features) for models with ``needs_item_features = True``;
* **dataloaders**: RecBole gives its auto-encoders (MultiVAE, CDAE ...) a ``UserDataLoader``
  (batches of user ids) by model name; ``recbole.data.utils.get_dataloader`` is wrapped to do the
  same for plugin models with ``user_dataloader = True`` (VAEGAN), and, in the plugin's pipeline, to
  evaluate full ranking with ``BudgetFullSortEvalDataLoader`` (users per batch from a memory budget)
  and, with ``negatives_from: train``, to train with ``TrainingItemsTrainDataLoader``, and with
  ``heldout_users`` (strong generalisation) to train auto-encoders on the training users only
  (``TrainingUsersDataLoader``);
* **defaults and data**: ``Config._load_internal_config_dict`` is wrapped to add, after RecBole's own
  defaults and below every user setting, ``properties/overall.yaml``, ``properties/model/<Model>.yaml``
  and ``dataset_configs/<dataset>.yaml`` -- only where the plugin is involved (a plugin model, the
  plugin's pipeline, or a plugin dataset). ``Config._set_default_parameters`` points ``data_path`` at
  a plugin dataset's build folder; nothing is built until RecBole loads the data
  (``Dataset._load_data`` is wrapped to build it then), so a ``Config`` never writes anything;
* **early stopping**: ``recbole.trainer.trainer.early_stopping`` is RecBole's own, except inside a plugin
  trainer's ``fit`` with ``valid_ties_improve: False`` (the MG preset), where a tie is no improvement;
* **checkpoints**: ``Trainer._save_checkpoint`` is replaced by one that stores tensors and plain
  data (``weights_only=True`` loads it) and writes atomically, so RecBole's own trainers can reload
  their checkpoints on torch >= 2.6 (RecBole 1.2.1 pickles its ``Config``, which torch refuses).

Which dataset a name means (``data.prepare.plugin_source``): RecBole's atomic files win for RecBole's
models in plain RecBole code; the plugin's source files win for plugin models and in the plugin's
pipeline; ``plugin_dataset: True | False`` forces either. A dataset without a plugin config is always
RecBole's. RecBole's installed files are never edited; plugin names never shadow RecBole's models.
"""
import functools
import importlib
import pkgutil
import sys

import recbole.data.dataset
import recbole.data.utils
import recbole.trainer
import recbole.trainer.trainer
from recbole.config import Config
from recbole.data.dataloader import FullSortEvalDataLoader, TrainDataLoader, UserDataLoader
from recbole.data.dataset import Dataset
from recbole.model.abstract_recommender import AbstractRecommender
from recbole.trainer import Trainer
from recbole.utils import ModelType
from recbole.utils import get_model as recbole_get_model
from recbole.utils import get_trainer as recbole_get_trainer

from recbole_robust import recbole_internals, resources
from recbole_robust.config import PluginConfig
from recbole_robust.data.dataloader import BudgetFullSortEvalDataLoader, TrainingItemsTrainDataLoader
from recbole_robust.data.heldout import TrainingUsersDataLoader
from recbole_robust.data.dataset import GraphDataset, MultimodalDataset
from recbole_robust.data.prepare import ensure_built, plugin_source, set_build_target, time_order_fallback
from recbole_robust.errors import RecBoleRobustError
from recbole_robust.model.contract import hook
from recbole_robust.trainer import TRAINERS
from recbole_robust.trainer.checkpoint import save_plain_checkpoint
from recbole_robust.trainer.trainer import RobustMixin, RobustTrainer, early_stopping

MODEL_PACKAGES = {"general_recommender": "recbole_robust.model.general_recommender"}
_REGISTERED = False


def plugin_models():
    """``{name: class}`` of the plugin's models: one per module, module name = class name lower-cased."""
    models = {}
    for submodule, package_name in MODEL_PACKAGES.items():
        package = importlib.import_module(package_name)
        for info in pkgutil.iter_modules(package.__path__):
            module = importlib.import_module(f"{package_name}.{info.name}")
            for obj in vars(module).values():
                if (isinstance(obj, type) and issubclass(obj, AbstractRecommender)
                        and obj.__module__ == module.__name__ and obj.__name__.lower() == info.name):
                    models[obj.__name__] = obj
    return models


def _recbole_has_module(submodule, file_name):
    spec = importlib.util.find_spec(f"recbole.model.{submodule}")
    return any(info.name == file_name for info in pkgutil.iter_modules(spec.submodule_search_locations))


def is_plugin_model(model_class):
    return isinstance(model_class, type) and model_class.__module__.startswith("recbole_robust.")


def _hook_config():
    original_internal = Config._load_internal_config_dict
    original_defaults = Config._set_default_parameters

    @functools.wraps(original_internal)
    def load_internal_config_dict(self, model, model_class, dataset):
        original_internal(self, model, model_class, dataset)
        plugin_first = isinstance(self, PluginConfig) or is_plugin_model(model_class)
        self._plugin_source = plugin_source(dataset, self.external_config_dict, plugin_first)
        self._plugin_involved = plugin_first or self._plugin_source is not None
        if not self._plugin_involved:
            return  # plain RecBole: exactly as without the plugin
        for path in (resources.overall_file(), resources.model_file(model)):
            if path is not None:
                self._update_internal_config_dict(str(path))
        if self._plugin_source:
            added = self._update_internal_config_dict(str(resources.dataset_file(dataset))) or {}
            self.parameters["Dataset"] += [k for k in added if k not in self.parameters["Dataset"]]

    @functools.wraps(original_defaults)
    def set_default_parameters(self):
        original_defaults(self)
        if getattr(self, "_plugin_source", None):
            set_build_target(self, self._plugin_source)
        if getattr(self, "_plugin_involved", False):
            time_order_fallback(self)

    Config._load_internal_config_dict = load_internal_config_dict
    Config._set_default_parameters = set_default_parameters


def _hook_dataset():
    original = Dataset._load_data

    @functools.wraps(original)
    def load_data(self, token, dataset_path):
        if self.config["plugin_build"]:
            ensure_built(self.config)
        return original(self, token, dataset_path)

    Dataset._load_data = load_data


def _hook_dataloader(user_loader_models):
    original = recbole.data.utils.get_dataloader

    @functools.wraps(original)
    def get_dataloader(config, phase):
        loader = UserDataLoader if phase == "train" and config["model"] in user_loader_models else original(config, phase)
        if loader is UserDataLoader and isinstance(config, PluginConfig) and config["heldout_users"]:
            return TrainingUsersDataLoader  # strong generalisation: the held-out users are never trained on
        if loader is TrainDataLoader and isinstance(config, PluginConfig) and config["negatives_from"] == "train" \
                and config["train_neg_sample_args"]["distribution"] != "none":
            return TrainingItemsTrainDataLoader  # the MG preset: negatives among the training items
        if loader is FullSortEvalDataLoader and isinstance(config, PluginConfig) \
                and config["MODEL_TYPE"] != ModelType.SEQUENTIAL:
            return BudgetFullSortEvalDataLoader  # the plugin's pipeline: batches by memory budget
        return loader

    recbole.data.utils.get_dataloader = get_dataloader  # the name data_preparation looks up


def register():
    """Make every plugin model visible to RecBole's lookups (idempotent)."""
    global _REGISTERED
    if _REGISTERED:
        return
    recbole_internals.check()
    for name, cls in plugin_models().items():
        submodule = "general_recommender"
        if _recbole_has_module(submodule, name.lower()):
            raise RecBoleRobustError(f"plugin model {name} would shadow RecBole's built-in model of that name")
        sys.modules[f"recbole.model.{submodule}.{name.lower()}"] = sys.modules[cls.__module__]
        setattr(recbole.trainer, f"{name}Trainer", model_trainer(cls))
        dataset_class = MultimodalDataset if hook(cls, "needs_item_features") else GraphDataset
        setattr(recbole.data.dataset, f"{name}Dataset", dataset_class)
    _hook_config()
    _hook_dataset()
    Trainer._save_checkpoint = save_plain_checkpoint
    recbole.trainer.trainer.early_stopping = early_stopping  # RecBole's, unless valid_ties_improve is False
    _hook_dataloader({name for name, cls in plugin_models().items() if hook(cls, "user_dataloader")})
    _REGISTERED = True


def model_trainer(model_class):
    """The trainer class a plugin model names (``trainer_class``), default ``RobustTrainer``."""
    name = hook(model_class, "trainer_class")
    if name is None:
        return RobustTrainer
    if name not in TRAINERS:
        raise RecBoleRobustError(f"{model_class.__name__}.trainer_class {name!r} is not one of the plugin's trainers "
                                 f"({', '.join(TRAINERS)})")
    return TRAINERS[name]


def get_model(name):
    """The model class of ``name`` (plugin or RecBole), or a one-line error listing the plugin models."""
    try:
        return recbole_get_model(name)
    except ModuleNotFoundError as e:
        # RecBole's lookup ends in exlib_recommender, whose package imports lightgbm and xgboost
        if _recbole_has_module("exlib_recommender", name.lower()):
            raise RecBoleRobustError(f"model {name} needs the package {e.name} (pip install {e.name})") from None
    except ValueError:
        pass
    raise RecBoleRobustError(
        f"unknown model '{name}': not a plugin model ({', '.join(sorted(plugin_models()))}) "
        f"nor a RecBole model (names are case-sensitive, e.g. BPR, LightGCN, MultiVAE)"
    )


@functools.cache
def _with_safe_checkpoints(trainer_class):
    if trainer_class is Trainer:
        return RobustTrainer
    return type(f"Robust{trainer_class.__name__}", (RobustMixin, trainer_class), {})


def get_trainer(model_type, model_name):
    """RecBole's trainer lookup, with safe checkpoints added to RecBole's own trainer classes."""
    trainer_class = recbole_get_trainer(model_type, model_name)
    if issubclass(trainer_class, RobustMixin) or not issubclass(trainer_class, Trainer):
        return trainer_class
    return _with_safe_checkpoints(trainer_class)
