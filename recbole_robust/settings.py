"""The settings schema: what a valid value of each setting is, written once.

A schema is ``{setting: (check, what a valid value is)}``. Each feature declares the entries of its own
settings next to its code (``trainer/mirror.py``: ``mg_*``; ``trainer/sharpness.py``: ``sam_*``;
``perturb/engine.py``: ``adv_*``; ``robustness/attacks.py`` and every analysis of
``robustness/analysis/``: theirs), ``config.SETTINGS`` gathers them with RecBole's own, and
``check_settings`` applies a schema. A feature keeps only its cross-field rules (``mg_alpha1 >
mg_alpha2``, sharpness not with Mirror Gradient).
"""
import math
import numbers

from recbole_robust.errors import RecBoleRobustError


def is_int(v):
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def is_number(v):
    return isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v)


def is_bool(v):
    return isinstance(v, bool)


def positive_int(v):
    return is_int(v) and v > 0


def as_list(v):
    """A setting that takes one value or a list of them, as a list."""
    return v if isinstance(v, list) else [v]


def int_list(v, low):
    values = as_list(v)
    return bool(values) and all(is_int(x) and x >= low for x in values)


def str_list(v, allowed=None):
    values = as_list(v)
    return bool(values) and all(isinstance(x, str) and (allowed is None or x.lower() in allowed) for x in values)


def number_list(v, low, inclusive=True, high=None):
    values = as_list(v)
    return bool(values) and all(is_number(x) and (x >= low if inclusive else x > low) and (high is None or x <= high)
                                for x in values)


BOOL = (is_bool, "True or False")
POSITIVE_INT = (positive_int, "an integer >= 1")
NON_NEGATIVE = (lambda v: is_number(v) and v >= 0, "a number >= 0")
POSITIVE = (lambda v: is_number(v) and v > 0, "a number > 0")
NON_NEGATIVE_LIST = (lambda v: number_list(v, 0), "a number >= 0 or a list of them")


def check_settings(settings, schema, source=""):
    """One-line error for the first of ``settings`` (``{name: value}``) that ``schema`` rejects."""
    for key, value in settings.items():
        if key in schema:
            check, expected = schema[key]
            if not check(value):
                raise RecBoleRobustError(f"{source}{key} must be {expected}, got {value!r}")


def check_config(config, schema):
    """``check_settings`` on the values ``config`` holds for every setting of ``schema`` (defaults included)."""
    check_settings({key: config[key] for key in schema}, schema)
