"""Locate and read the YAML files that ship with the package (``properties/``, ``dataset_configs/``).

Both folders are mapped into the package by setup.py, so ``importlib.resources`` finds them from an
editable install and from a wheel alike. YAML is read with RecBole's loader, so values such as
``1e-3`` are floats exactly as in RecBole's own config files.
"""
import os
from importlib import resources
from pathlib import Path

import yaml
from recbole.config import Config

from recbole_robust.errors import RecBoleRobustError


def _folder(name):
    try:
        return resources.files(f"recbole_robust.{name}")
    except ModuleNotFoundError:
        # the package imported straight from a source checkout (e.g. ``python run_recbole_robust.py``
        # in the repository root puts the checkout first on sys.path, ahead of the install's mapping)
        return Path(__file__).resolve().parent.parent / name


def _resource(folder, name):
    path = _folder(folder).joinpath(name)
    return path if path.is_file() else None


MAX_YAML_BYTES = 1 << 20
"""Largest YAML file read (config files, search spaces, presets): settings fit in far less."""
MAX_YAML_ALIASES = 20
"""Most aliases (``*name``) in one YAML file. n aliases expand a document at most ~3^(n/3)-fold, so 20
keep any file under ~1,600 times its size; the 81 of a "billion laughs" bomb expand 9^9-fold."""
MAX_NESTING = 50
"""Deepest nesting of lists / mappings in a YAML file or a value (``config.check_nesting``)."""


def _limited_loader():
    """RecBole's YAML loader, refusing alias bombs and deep nesting while it composes the document."""
    base = Config._build_yaml_loader(None)  # RecBole's loader; the method does not use self

    class LimitedLoader(base):
        def __init__(self, stream):
            super().__init__(stream)
            self.aliases, self.depth = 0, 0

        def compose_node(self, parent, index):
            if self.check_event(yaml.AliasEvent):
                self.aliases += 1
                if self.aliases > MAX_YAML_ALIASES:
                    raise RecBoleRobustError(f"more than {MAX_YAML_ALIASES} YAML aliases (an alias bomb?)")
            self.depth += 1
            if self.depth > MAX_NESTING:
                raise RecBoleRobustError(f"lists or mappings nested more than {MAX_NESTING} deep")
            try:
                return super().compose_node(parent, index)
            finally:
                self.depth -= 1

    return LimitedLoader


def read_yaml(path):
    """The content of a YAML file (``None`` when it is empty), read with RecBole's loader.

    Files over ``MAX_YAML_BYTES``, with more than ``MAX_YAML_ALIASES`` aliases or nested deeper than
    ``MAX_NESTING`` are refused with one line naming the file.
    """
    size = os.path.getsize(path)
    if size > MAX_YAML_BYTES:
        raise RecBoleRobustError(f"{path} is {size} bytes; settings files are limited to {MAX_YAML_BYTES} bytes")
    with open(path, "r", encoding="utf-8") as f:
        try:
            return yaml.load(f, Loader=_limited_loader())
        except RecBoleRobustError as e:
            raise RecBoleRobustError(f"{path}: {e}") from None


def overall_file():
    """Plugin-wide defaults (``properties/overall.yaml``)."""
    return _resource("properties", "overall.yaml")


def model_file(model_name):
    """Default hyper-parameters of a plugin model (``properties/model/<Model>.yaml``), or ``None``."""
    return _resource("properties", f"model/{model_name}.yaml")


def search_space_file(model_name):
    """The shipped Ray Tune search space of a model (``properties/search/<Model>.yaml``), or ``None``."""
    return _resource("properties", f"search/{model_name}.yaml")


def preset_file(name):
    """An evaluation protocol preset (``properties/presets/<name>.yaml``), or ``None``."""
    return _resource("properties", f"presets/{name}.yaml")


def preset_model_file(preset, model_name):
    """A model's defaults under a preset (``properties/presets/<preset>/<Model>.yaml``), or ``None``."""
    return _resource("properties", f"presets/{preset}/{model_name}.yaml")


def preset_names():
    folder = _folder("properties").joinpath("presets")
    return sorted(p.name[: -len(".yaml")] for p in folder.iterdir() if p.name.endswith(".yaml"))


def dataset_file(dataset_name):
    """The plugin's config of a dataset (``dataset_configs/<name>.yaml``), or ``None``."""
    return _resource("dataset_configs", f"{dataset_name}.yaml")


def dataset_config(dataset_name):
    """The parsed plugin config of a dataset, or ``None`` for datasets the plugin does not build."""
    path = dataset_file(dataset_name)
    return (read_yaml(str(path)) or {}) if path else None


def dataset_names():
    """Names of the datasets the plugin knows how to build."""
    folder = _folder("dataset_configs")
    return sorted(p.name[: -len(".yaml")] for p in folder.iterdir() if p.name.endswith(".yaml"))
