"""Find a plugin dataset's source files, build RecBole atomic files once, and point RecBole at them.

A ``Config`` only decides (``plugin_source``) and records where the build will be
(``set_build_target``); the build itself happens when RecBole loads the data (``ensure_built``,
called from ``Dataset._load_data``, see ``registry.py``), so plain RecBole code that names a plugin
dataset gets the built files, and building a ``Config`` writes nothing.

Builds are cached in ``<build_dir>/<dataset>/`` with a fingerprint of the builder and of the source
files (size and modification time); a changed source or builder rebuilds. A build holds a lock
(``<build_dir>/.<dataset>.lock``, ``filelock``) from the fingerprint check to the rename, so two
processes never build the same dataset at once and neither deletes a finished build the other is
reading; it is written to a temporary folder and renamed into place, and temporaries left by a
killed build are removed by the next build.

The builder removes only what it wrote itself: every folder it creates holds ``BUILD_MARKER`` from its
first moment, and a folder without it (a user's data, anything else) is never removed or replaced. A
build folder that overlaps a data folder is refused when the ``Config`` is made (``check_build_target``).
What a build creates is recorded (``undo_on_error``), so a run refused after its dataset was built
(``quick_start.prepare_run``) leaves nothing behind: neither the build, nor its lock, nor the folders.
"""
import contextlib
import glob
import json
import os
import shutil
import tempfile
from logging import getLogger

from filelock import FileLock

from recbole_robust.data.builders import BUILDER_VERSION, BUILDERS, layouts
from recbole_robust.errors import RecBoleRobustError
from recbole_robust.resources import dataset_config, dataset_names

DATA_ENV = "RECBOLE_ROBUST_DATA"
BUILD_INFO = "build.json"
BUILD_MARKER = ".recbole-robust-build"
"""Written first into every folder the builder creates; only a folder holding it is ever removed."""

_created = []
"""Paths created by this process's builds, newest last (folders, lock files); see ``undo_on_error``."""


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


def _temporary_prefix(name):
    return f".{name}-build-"


def is_own_folder(folder):
    """Whether ``folder`` was written by the builder (its marker; or ``build.json`` of a build made
    before the marker existed)."""
    if not os.path.isdir(folder) or os.path.islink(folder):
        return False
    if os.path.isfile(os.path.join(folder, BUILD_MARKER)):
        return True
    info = _read_info(folder)
    return isinstance(info, dict) and isinstance(info.get("fingerprint"), dict) \
        and "builder_version" in info["fingerprint"]


def _inside(path, folder):
    """Whether ``path`` is ``folder`` or lies below it (both resolved)."""
    path, folder = os.path.realpath(path), os.path.realpath(folder)
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def check_build_target(name, build_dir, roots, sources):
    """Refuse a build folder that overlaps the data, or that exists and is not the builder's own.

    ``roots``: the data roots searched; ``sources``: the folders the dataset's source files may be in.
    ``build_dir`` may not be a data root or lie in a source folder, and the build folder
    ``<build_dir>/<name>`` may not be, or hold, either: the build would write among, or replace, the
    user's source files. (A build folder beside the dataset folders of a root, e.g. ``<root>/built``, is
    allowed: nothing of the user's is in it.)
    """
    target = os.path.join(os.path.abspath(build_dir), name)
    overlapping = [f for f in roots if os.path.realpath(build_dir) == os.path.realpath(f) or _inside(f, target)]
    overlapping += [f for f in sources if _inside(build_dir, f) or _inside(f, target)]
    if overlapping:
        raise RecBoleRobustError(
            f"build_dir {build_dir} overlaps the data folder {overlapping[0]}: builds are written outside the "
            "source data (choose another --build_dir)")
    if os.path.lexists(target) and not is_own_folder(target):
        raise RecBoleRobustError(
            f"build folder {target} exists and was not written by recbole-robust; it is left as it is "
            "(remove it or choose another --build_dir)")


def _remove_created(paths):
    for path in reversed(paths):
        if os.path.isdir(path) and not os.path.islink(path):
            if is_own_folder(path):
                shutil.rmtree(path, ignore_errors=True)
            else:
                with contextlib.suppress(OSError):
                    os.rmdir(path)  # a folder made for the build: removed only while it is empty
        elif os.path.isfile(path):
            with contextlib.suppress(OSError):
                os.remove(path)


@contextlib.contextmanager
def undo_on_error():
    """If the block raises, remove what builds created since it began (build folders, locks, parents).

    On success the record is kept, so an enclosing block can still undo it.
    """
    mark = len(_created)
    try:
        yield
    except BaseException:
        _remove_created(_created[mark:])
        del _created[mark:]
        raise


def _makedirs(folder):
    """``os.makedirs`` that records each folder it creates."""
    missing = []
    folder = os.path.abspath(folder)
    while not os.path.exists(folder):
        missing.append(folder)
        folder = os.path.dirname(folder)
    os.makedirs(missing[0] if missing else folder, exist_ok=True)
    _created.extend(reversed(missing))


def _remove_stale_temporaries(build_dir, name):
    """Temporaries of a killed build of ``name`` (the caller holds the lock); only the builder's own."""
    for stale in glob.glob(os.path.join(glob.escape(build_dir), _temporary_prefix(name) + "*")):
        if is_own_folder(stale):
            shutil.rmtree(stale, ignore_errors=True)
        elif os.path.isdir(stale):
            with contextlib.suppress(OSError):
                os.rmdir(stale)  # killed before its marker was written: empty


def build_dataset(name, build, source_dir, files, build_dir):
    """Build (or reuse the cached build of) dataset ``name``; return ``(folder, build info)``.

    A failed build leaves nothing behind; what a finished one created stays recorded for the caller's
    ``undo_on_error``.
    """
    target = os.path.abspath(os.path.join(build_dir, name))
    fingerprint = _fingerprint(name, build, source_dir, files)
    info = _read_info(target)
    if info is not None and is_own_folder(target) and info["fingerprint"] == fingerprint:
        return target, info
    with undo_on_error():
        _makedirs(build_dir)
        lock = os.path.join(build_dir, f".{name}.lock")
        if not os.path.exists(lock):
            _created.append(lock)
        with FileLock(lock):
            info = _read_info(target)  # another process may have finished the build while we waited
            if info is not None and is_own_folder(target) and info["fingerprint"] == fingerprint:
                return target, info
            if os.path.lexists(target) and not is_own_folder(target):
                raise RecBoleRobustError(f"build folder {target} exists and was not written by recbole-robust")
            _remove_stale_temporaries(build_dir, name)
            getLogger().info(f"Building dataset '{name}' from {source_dir} into {target}")
            tmp = tempfile.mkdtemp(prefix=_temporary_prefix(name), dir=build_dir)
            try:
                open(os.path.join(tmp, BUILD_MARKER), "w").close()
                options = {k: v for k, v in build.items() if k not in ("builder", "sources", "recbole_example")}
                meta = BUILDERS[build["builder"]](source_dir, tmp, name, **options)
                with open(os.path.join(tmp, BUILD_INFO), "w", encoding="utf-8") as f:
                    json.dump({"fingerprint": fingerprint, **meta}, f, indent=1)
                if os.path.lexists(target):
                    shutil.rmtree(target)  # the builder's own previous build (checked above)
                os.rename(tmp, target)
                _created.append(target)
            except RecBoleRobustError:
                raise
            except (OSError, ValueError, KeyError) as e:
                raise RecBoleRobustError(f"could not build dataset '{name}' from {source_dir}: {e}") from e
            finally:
                if os.path.isdir(tmp):
                    shutil.rmtree(tmp, ignore_errors=True)
    return target, _read_info(target)


def recbole_atomic_dir(name, data_path):
    """The folder plain RecBole reads dataset ``name`` from (its ``_set_default_parameters`` rule)."""
    if name == "ml-100k":
        return _recbole_example_dir(name)
    return os.path.join(data_path or "dataset/", name)


def has_atomic_files(folder, name):
    return any(os.path.isfile(os.path.join(folder, f)) for f in (f"{name}.inter", f"{name}.train.inter"))


def plugin_source(name, external, plugin_first):
    """Whether ``name`` is built by the plugin: ``(source_dir, files)``, or ``None`` for RecBole's files.

    ``external`` is the user's settings (``plugin_dataset``: ``auto`` | True | False; ``data_path``).
    With ``auto``, ``plugin_first`` (a plugin model, the plugin's pipeline) prefers the plugin's source
    files and falls back on RecBole's atomic files; plain RecBole prefers its atomic files and uses the
    plugin's build only where they are missing and the source files are there.
    """
    conf = dataset_config(name)
    choice = external.get("plugin_dataset", "auto")
    if conf is None or choice is False:
        return None
    try:
        source = find_source(name, conf["build"], data_roots(external.get("data_path")))
    except RecBoleRobustError:
        if choice is True or plugin_first and not has_atomic_files(
                recbole_atomic_dir(name, external.get("data_path")), name):
            raise
        return None
    if choice is True or plugin_first:
        return source
    return None if has_atomic_files(recbole_atomic_dir(name, external.get("data_path")), name) else source


def set_build_target(config, source):
    """Point ``config`` at the build folder of its plugin dataset (built later, by ``ensure_built``).

    A build folder that overlaps the data is refused here, before anything is read or written.
    """
    name = config.dataset
    source_dir, files = source
    roots = data_roots(config.external_config_dict.get("data_path"))
    build = dataset_config(name)["build"]
    sources = [os.path.join(root, folder) for root in roots for folder in build.get("sources", [name])]
    check_build_target(name, config["build_dir"], roots, [*sources, source_dir])
    config["data_path"] = os.path.abspath(os.path.join(config["build_dir"], name))
    config["plugin_build"] = {"build": build, "source_dir": source_dir, "files": files}


def ensure_built(config):
    """Build the plugin dataset of ``config`` if its cache is missing or stale; set the feature keys."""
    plan = config["plugin_build"]
    target, info = build_dataset(config.dataset, plan["build"], plan["source_dir"], plan["files"], config["build_dir"])
    config["feature_path"] = info["feature_path"]
    config["feature_rows"] = info["feature_rows"]
    config["feature_tokens"] = info["feature_tokens"]
    return target


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
    if config["plugin_build"]:
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
    encoding = config["encoding"] or "utf-8"
    for n in names:
        check_atomic_file(os.path.join(path, n), config["field_separator"], encoding, rows="interactions")
    for suffix in ("item", "user"):
        if os.path.isfile(os.path.join(path, f"{name}.{suffix}")):
            check_atomic_file(os.path.join(path, f"{name}.{suffix}"), config["field_separator"], encoding)


FEATURE_TYPES = ("token", "float", "token_seq", "float_seq")  # recbole.utils.FeatureType


def check_atomic_file(path, separator, encoding, rows=None):
    """A RecBole atomic file as RecBole's ``Dataset`` reads it (``_load_feat``), checked line by line first.

    The header names each column ``name:type`` (a RecBole feature type), once; no row has more fields
    than the header (pandas would shift them into other columns); the file decodes as ``encoding``.
    ``rows``: what the file must hold at least one of (``None``: it may have a header only).
    """
    try:
        with open(path, encoding=encoding, newline="") as f:
            header = f.readline().rstrip("\r\n")
            if not header.strip():
                raise RecBoleRobustError(f"atomic file {path} is empty (a header line is expected)")
            names = []
            for column in header.split(separator):
                field, colon, kind = column.partition(":")
                if not colon or not field:
                    raise RecBoleRobustError(f"atomic file {path}: header column {column[:50]!r} has no type "
                                             f"(name:type, a type of {', '.join(FEATURE_TYPES)})")
                if kind not in FEATURE_TYPES:
                    raise RecBoleRobustError(f"atomic file {path}: column {field} has type {kind[:50]!r}, "
                                             f"not one of {', '.join(FEATURE_TYPES)}")
                if field in names:
                    raise RecBoleRobustError(f"atomic file {path}: column {field} appears twice in the header")
                names.append(field)
            count = 0
            for number, line in enumerate(f, start=2):
                line = line.rstrip("\r\n")
                if not line.strip():
                    continue
                count += 1
                if line.count(separator) + 1 > len(names):
                    raise RecBoleRobustError(f"atomic file {path}: line {number} has {line.count(separator) + 1} "
                                             f"fields, the header {len(names)}")
    except UnicodeDecodeError as e:
        raise RecBoleRobustError(f"atomic file {path} is not {encoding} text ({e.reason}; set encoding "
                                 "to the file's)") from None
    if rows and not count:
        raise RecBoleRobustError(f"atomic file {path} holds no {rows}")
