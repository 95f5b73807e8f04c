"""Settings of the plugin's pipeline: parsed as literals, never evaluated, and validated up front.

RecBole's ``Config`` turns every string it is given (command line, ``config_dict``) into a value
with ``eval``, so ``--epochs="__import__('os').system(...)"`` runs code. ``PluginConfig`` is the
``Config`` of the plugin's pipeline (``quick_start.make_config``, Ray trials): it parses strings with
``parse_value`` (a Python literal, a YAML flow list/mapping, ``true``/``false``, else the string
itself) and checks the types of the settings a user can get wrong (``SETTINGS``) before RecBole
uses any of them. It does not read ``sys.argv``: the CLI turns the command line into a dict with
``parse_overrides``. Plain ``recbole.config.Config`` is left as RecBole wrote it.
"""
import ast
import os
import re

import yaml
from recbole.config import Config

from recbole_robust import settings
from recbole_robust.data import poison
from recbole_robust.errors import RecBoleRobustError
from recbole_robust.perturb import engine
from recbole_robust.resources import MAX_NESTING
from recbole_robust.robustness import analyses, attacks
from recbole_robust.settings import BOOL, POSITIVE_INT, is_int, is_number, positive_int, str_list
from recbole_robust.trainer import distributed, mirror, sharpness

KD_DAGFM_TEACHERS = ("CrossNet", "CINComp")
"""The classes RecBole's KD_DAGFM can build as its teacher: it runs ``eval(config['teacher'])``."""

RECBOLE_EVALUATED = {
    "recbole/config/configurator.py": "Config._convert_config_dict: overridden by PluginConfig (parse_value)",
    "recbole/trainer/hyper_tuning.py": "HyperTuning's search-space reader: never used (the plugin's tune.py)",
    "recbole/model/context_aware_recommender/kd_dagfm.py": "config['teacher']: SETTINGS allows KD_DAGFM_TEACHERS",
}
"""Every file of RecBole 1.2.1 that calls ``eval`` on a value, and what makes the plugin's pipeline safe from
it; ``tests/test_trust.py`` reads RecBole's source and fails on a call not listed here."""


MAX_VALUE_CHARS = 100_000
"""Longest string value parsed (a command-line or search-space value)."""


def nesting(value):
    """How deep lists, tuples and mappings nest in ``value`` (0 for a scalar), without recursion."""
    deepest, stack = 0, [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            item = list(item.values())
        if isinstance(item, (list, tuple, set)):
            depth += 1
            deepest = max(deepest, depth)
            if deepest > MAX_NESTING:
                break
            stack += [(x, depth) for x in item]
    return deepest


def check_nesting(key, value):
    if nesting(value) > MAX_NESTING:
        raise RecBoleRobustError(f"{key} holds lists or mappings nested more than {MAX_NESTING} deep")


def _bracket_depth(text):
    depth = deepest = 0
    for c in text:
        if c in "[({":
            depth += 1
            deepest = max(deepest, depth)
        elif c in "])}":
            depth -= 1
    return deepest


def parse_value(text):
    """A command-line or search-space string as a value, without evaluating code.

    Strings over ``MAX_VALUE_CHARS`` characters or nested deeper than ``MAX_NESTING`` are refused.
    """
    if not isinstance(text, str):
        return text
    if len(text) > MAX_VALUE_CHARS:
        raise RecBoleRobustError(f"a value of {len(text)} characters is longer than the {MAX_VALUE_CHARS} allowed")
    if _bracket_depth(text) > MAX_NESTING:
        raise RecBoleRobustError(f"a value nests lists or mappings more than {MAX_NESTING} deep")
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        pass
    stripped = text.strip()
    if stripped[:1] in ("[", "{"):
        try:  # YAML flow syntax: [item_features], {mode: uni100}
            return yaml.safe_load(stripped)
        except yaml.YAMLError:
            return text
    if stripped.lower() in ("true", "false"):
        return stripped.lower() == "true"
    return text


def parse_overrides(args):
    """``['--key=value', ...]`` -> ``{key: value}``; anything else is an error (the CLI refuses repeats)."""
    overrides = {}
    for arg in args:
        key, sep, value = arg[2:].partition("=") if arg.startswith("--") else ("", "", "")
        if not key or not sep:
            raise RecBoleRobustError(f"unrecognised argument {arg[:100]!r}: settings are given as --key=value")
        try:
            overrides[key] = parse_value(value)
        except RecBoleRobustError as e:
            raise RecBoleRobustError(f"--{key}: {e}") from None
    return overrides


def read_settings_file(path, what="config file"):
    """A YAML file of settings: it must exist and hold a non-empty mapping."""
    from recbole_robust.resources import read_yaml

    if not os.path.isfile(path):
        raise RecBoleRobustError(f"{what} {path} not found")
    try:
        content = read_yaml(path)
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise RecBoleRobustError(f"{what} {path} is not valid YAML: {reason}") from None
    if content is None:
        raise RecBoleRobustError(f"{what} {path} is empty")
    if not isinstance(content, dict):
        raise RecBoleRobustError(f"{what} {path} must hold a mapping of settings, not a {type(content).__name__}")
    return content


def _metric_names():
    from recbole.evaluator.register import metrics_dict

    return metrics_dict


LOG_LEVELS = ("info", "debug", "warning", "error", "critical")
EVAL_MODE = re.compile(r"^(full|labeled|uni[1-9][0-9]*|pop[1-9][0-9]*)$")


def _eval_mode_ok(mode):
    if isinstance(mode, dict):
        return set(mode) <= {"valid", "test"} and all(_eval_mode_ok(m) for m in mode.values())
    return isinstance(mode, str) and EVAL_MODE.match(mode) is not None


def _eval_args_problem(v):
    """What is wrong with an ``eval_args`` mapping (RecBole's keys split / order / group_by / mode), or None."""
    if not isinstance(v, dict):
        return "not a mapping"
    split = v.get("split")
    if split is not None:
        if not isinstance(split, dict) or len(split) != 1 or next(iter(split)) not in ("RS", "LS"):
            return "split"
        kind, value = next(iter(split.items()))
        if kind == "RS" and not (isinstance(value, list) and len(value) == 3 and settings.number_list(value, 0) and sum(value) > 0):
            return "split RS"
        if kind == "LS" and value not in ("valid_and_test", "valid_only", "test_only"):
            return "split LS"
    if v.get("order") not in (None, "RO", "TO"):
        return "order"
    if v.get("group_by") not in (None, "user", "none"):
        return "group_by"
    if "mode" in v and not _eval_mode_ok(v["mode"]):
        return "mode"
    return None


def _negative_sampling_ok(v):
    distribution = v.get("distribution", "uniform")
    if distribution in (None, "none", "None"):
        return True
    return distribution in ("uniform", "popularity") and positive_int(v.get("sample_num", 1))


RECBOLE_SETTINGS = {
    "epochs": POSITIVE_INT,
    "train_batch_size": POSITIVE_INT,
    "eval_batch_size": POSITIVE_INT,
    "embedding_size": POSITIVE_INT,
    "stopping_step": POSITIVE_INT,
    "eval_step": (lambda v: is_int(v) and v >= 0, "an integer >= 0"),
    "seed": (is_int, "an integer"),
    "learning_rate": settings.POSITIVE,
    "weight_decay": settings.NON_NEGATIVE,
    "topk": (lambda v: settings.int_list(v, 1), "an integer >= 1 or a list of them"),
    "metrics": (lambda v: str_list(v, _metric_names()), "RecBole metric names (recall, ndcg, hit, mrr ...)"),
    "valid_metric": (lambda v: isinstance(v, str) and v != "", "a metric name such as recall@20"),
    "eval_args": (lambda v: _eval_args_problem(v) is None, "a mapping such as {'split': {'RS': [0.8, 0.1, 0.1]}, "
                  "'order': 'RO', 'group_by': 'user', 'mode': 'full'}"),
    "train_neg_sample_args": (lambda v: v is None or isinstance(v, dict) and _negative_sampling_ok(v),
                              "~ or a mapping such as {'distribution': 'uniform', 'sample_num': 1} "
                              "(distribution uniform, popularity or none; sample_num an integer >= 1)"),
    "state": (lambda v: v is None or isinstance(v, str) and v.lower() in LOG_LEVELS,
              f"a log level: {', '.join(LOG_LEVELS)}"),
    "learner": (lambda v: isinstance(v, str) and v.lower() in engine.LEARNERS, f"one of {', '.join(engine.LEARNERS)}"),
    "show_progress": BOOL,
    "reproducibility": BOOL,
    # settings that RecBole 1.2.1 passes to eval(): only the names it can mean (RECBOLE_EVALUATED)
    "teacher": (lambda v: v in KD_DAGFM_TEACHERS, f"one of {', '.join(KD_DAGFM_TEACHERS)} (KD_DAGFM's teacher network)"),
}
"""RecBole's own settings that a user can get wrong in ways RecBole reports late or not at all."""

PIPELINE_SETTINGS = {
    "threads": (lambda v: v is None or positive_int(v), "an integer >= 1 (or ~: the CPUs available)"),
    "plugin_dataset": (lambda v: v in ("auto", True, False), "auto, True or False"),
    "eval_memory_mb": (lambda v: v is None or settings.is_number(v) and v > 0, "a number > 0 (or ~: by device)"),
    "history_items": (lambda v: v in (None, "train"), "train or ~ (RecBole's: training and validation items)"),
    "drop_cold_users": BOOL,
    "heldout_users": (lambda v: v is None or is_number(v) and 0 < v < 1, "a number in (0, 1) or ~"),
    "foldin_ratio": (lambda v: is_number(v) and 0 < v < 1, "a number in (0, 1)"),
    "negatives_from": (lambda v: v in ("all", "train"), "all or train"),
    "valid_ties_improve": BOOL,
}
"""The plugin's own data and evaluation settings."""

SETTINGS = {**RECBOLE_SETTINGS, **PIPELINE_SETTINGS, **engine.SETTINGS, **mirror.SETTINGS, **sharpness.SETTINGS,
            **attacks.SETTINGS, **analyses.SETTINGS, **poison.SETTINGS, **distributed.SETTINGS}
"""Every checked setting: ``{name: (check, what a valid value is)}``, each written once, beside its feature
(``settings.py``). Checked on the user's own settings (files, dict, command line, search spaces)."""
PATH_SETTINGS = ("checkpoint_dir", "build_dir", "data_path", "attack_dir", "analysis_dir")


def check_settings(values, source=""):
    """One-line error for the first of ``values`` whose value has the wrong type, range or nesting."""
    for key, value in values.items():
        check_nesting(f"{source}{key}", value)
        if key in PATH_SETTINGS and value is not None and not isinstance(value, str):
            raise RecBoleRobustError(f"{source}{key} must be a path, got {value!r}")
    settings.check_settings(values, SETTINGS, source)


def evaluated_metrics(config):
    """Names of the metrics a run reports, as RecBole keys them: ``recall@20``, ``mae`` ..."""
    from recbole.evaluator.register import metrics_dict

    names = []
    for metric in config["metrics"]:  # known names: checked with the user's settings (SETTINGS)
        metric = metric.lower()
        if any(need in ("rec.topk", "rec.items") for need in metrics_dict[metric].metric_need):
            names += [f"{metric}@{k}" for k in config["topk"]]
        else:
            names.append(metric)
    return names


RECBOLE_BROKEN_NEEDS = ("data.num_items", "data.count_items")
"""Collector data RecBole 1.2.1 stores as a number or a Counter, on which its ``get_data_struct`` calls ``.cpu()``:
a metric that needs them fails with an AttributeError at its first evaluation (ItemCoverage, GiniIndex,
AveragePopularity, TailPercentage)."""


def check_metrics(config):
    """``valid_metric`` and ``attack_metric`` must be among the metrics the run evaluates; metrics RecBole 1.2.1
    cannot compute are refused."""
    from recbole.evaluator.register import metrics_dict

    for metric in config["metrics"]:
        if any(need in RECBOLE_BROKEN_NEEDS for need in metrics_dict[metric.lower()].metric_need):
            raise RecBoleRobustError(f"metric {metric} fails in RecBole 1.2.1 (its evaluator collects "
                                     f"{', '.join(metrics_dict[metric.lower()].metric_need[1:])} as a number, not a "
                                     "tensor); leave it out of metrics")
    names = evaluated_metrics(config)
    for key in ("valid_metric", "attack_metric"):
        value = config[key]
        if value is not None and value.lower() not in names:
            raise RecBoleRobustError(f"{key} {value} is not among the evaluated metrics ({', '.join(names)})")


class PluginConfig(Config):
    """RecBole's ``Config`` for the plugin's pipeline: literal parsing, validated settings, no ``sys.argv``."""

    def _convert_config_dict(self, config_dict):
        return {key: parse_value(value) for key, value in config_dict.items()}

    def _load_cmd_line(self):
        return {}

    def _merge_external_config_dict(self):
        super()._merge_external_config_dict()
        check_settings(self.external_config_dict)
        if "local_rank" in self.external_config_dict:  # RecBole's _init_device would start its nccl-only group
            raise RecBoleRobustError("local_rank is set by the launcher: use --nproc (and world_size, ip, port and "
                                     "group_offset for a group over several machines)")

    def _init_device(self):
        super()._init_device()  # one process as far as RecBole knows (single_spec), on the CPU or a GPU
        distributed.join_group(self.final_config_dict)  # in a worker of --nproc: joins the group, sets the device
