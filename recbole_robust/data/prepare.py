"""Find a plugin dataset's source files, build RecBole atomic files once, and point RecBole at them.

``prepare_dataset(config)`` runs inside RecBole's ``Config`` (see ``registry.py``), so plain RecBole
code that names a plugin dataset gets the built files too. Builds are cached in
``<build_dir>/<dataset>/`` with a fingerprint of the builder and of the source files (size and
modification time); a changed source or builder rebuilds. A build is written to a temporary folder
and renamed into place, so an interrupted or failed build leaves nothing half-written.
"""
import json
import os
import shutil
import tempfile
from logging import getLogger

from recbole_robust.data.builders import BUILDER_VERSION, BUILDERS, layouts
from recbole_robust.errors import RecBoleRobustError
from recbole_robust.resources import dataset_config, dataset_names

DATA_ENV = "RECBOLE_ROBUST_DATA"
BUILD_INFO = "build.json"


def data_roots(explicit_path=None):
    """Folders searched for dataset sources: ``--data_path``, ``$RECBOLE_ROBUST_DATA``, ``./dataset``."""
    roots = []
    if explicit_path:
        roots.append(explicit_path)
    roots += [p for p in os.environ.get(DATA_ENV, "").split(os.pathsep) if p]
    roots.append("dataset")
    unique = []
    for root in roots:
        root = os.path.abspath(os.path.expanduser(root))
        if root not in unique:
            unique.append(root)
    return unique


def _recbole_example_dir(name):
    import recbole

    return os.path.join(os.path.dirname(recbole.__file__), "dataset_example", name)


def find_source(name, build, roots):
    """Return ``(source_dir, files)`` of the first candidate folder holding one of the layouts."""
    candidates = [os.path.join(root, folder) for root in roots for folder in build.get("sources", [name])]
    if build.get("recbole_example"):
        candidates.append(_recbole_example_dir(name))
    alternatives = layouts(build["builder"], build)
    for folder in candidates:
        for files in alternatives:
            if all(os.path.isfile(os.path.join(folder, f)) for f in files):
                return folder, files
    expected = " or ".join("+".join(files) for files in alternatives)
    raise RecBoleRobustError(
        f"dataset '{name}' not found: searched {', '.join(candidates)} for {expected} "
        f"(set --data_path or ${DATA_ENV})"
    )


def _fingerprint(name, build, source_dir, files):
    stats = []
    for f in files:
        st = os.stat(os.path.join(source_dir, f))
        stats.append([f, st.st_size, st.st_mtime_ns])
    return {
        "dataset": name,
        "builder_version": BUILDER_VERSION,
        "build": build,
        "source_dir": source_dir,
        "files": stats,
    }


def _read_info(folder):
    try:
        with open(os.path.join(folder, BUILD_INFO), encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def build_dataset(name, build, source_dir, files, build_dir):
    """Build (or reuse the cached build of) dataset ``name``; return its build info."""
    target = os.path.abspath(os.path.join(build_dir, name))
    fingerprint = _fingerprint(name, build, source_dir, files)
    info = _read_info(target)
    if info is not None and info["fingerprint"] == fingerprint:
        return target, info

    getLogger().info(f"Building dataset '{name}' from {source_dir} into {target}")
    os.makedirs(build_dir, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{name}-", dir=build_dir)
    try:
        options = {k: v for k, v in build.items() if k not in ("builder", "sources", "recbole_example")}
        meta = BUILDERS[build["builder"]](source_dir, tmp, name, **options)
        info = {"fingerprint": fingerprint, **meta}
        with open(os.path.join(tmp, BUILD_INFO), "w", encoding="utf-8") as f:
            json.dump(info, f, indent=1)
        if os.path.isdir(target):
            shutil.rmtree(target)
        try:
            os.rename(tmp, target)
        except OSError:  # a concurrent process (e.g. another Ray trial) finished the same build first
            shutil.rmtree(tmp, ignore_errors=True)
    except RecBoleRobustError:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    except (OSError, ValueError, KeyError) as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise RecBoleRobustError(f"could not build dataset '{name}' from {source_dir}: {e}") from e
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target, _read_info(target)


def prepare_dataset(config):
    """Build the plugin dataset named by ``config`` and set ``data_path`` and the feature keys.

    Datasets without a plugin config are left to RecBole untouched.
    """
    name = config.dataset
    conf = dataset_config(name)
    if conf is None:
        return
    roots = data_roots(config.external_config_dict.get("data_path"))
    source_dir, files = find_source(name, conf["build"], roots)
    target, info = build_dataset(name, conf["build"], source_dir, files, config["build_dir"])
    config["data_path"] = target
    config["feature_path"] = info["feature_path"]
    config["feature_rows"] = info["feature_rows"]
    config["feature_tokens"] = info["feature_tokens"]


def time_order_fallback(config):
    """Order by time (``eval_args.order: TO``) on data without timestamps becomes random (RO).

    The ACAE protocol holds out the latest interaction, and a random one where there are no
    timestamps (FilmTrust); RecBole itself would fail on TO without a time field.
    """
    eval_args = config["eval_args"] or {}
    loaded = (config["load_col"] or {}).get("inter") if config["load_col"] else None
    if eval_args.get("order") == "TO" and loaded is not None and config["TIME_FIELD"] not in loaded:
        eval_args["order"] = "RO"
        getLogger().warning(f"dataset '{config.dataset}' has no timestamps: eval_args order TO -> RO")


def check_dataset_exists(config):
    """Fail clearly when a non-plugin dataset has no atomic files (instead of RecBole's download)."""
    if dataset_config(config.dataset) is not None:
        return
    path = config["data_path"]
    name = config.dataset
    names = [f"{name}.inter"]
    if config["benchmark_filename"]:
        names = [f"{name}.{part}.inter" for part in config["benchmark_filename"]]
    if not all(os.path.isfile(os.path.join(path, n)) for n in names):
        raise RecBoleRobustError(
            f"unknown dataset '{name}': not one of the plugin's datasets ({', '.join(dataset_names())}) "
            f"and no RecBole atomic files {', '.join(names)} in {path}"
        )
