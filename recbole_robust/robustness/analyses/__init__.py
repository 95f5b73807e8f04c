"""The robustness analyses of a trained model, one module each (``base.py`` says what an analysis is).

``ANALYSES`` holds every module's ``ANALYSIS`` in report order; ``SETTINGS`` their settings' schema; ``NAMES``
the names ``--analysis`` selects (``--attack`` selects the attacks). A module is found by being here.
"""
import importlib
import pkgutil

from recbole_robust.robustness.analyses.base import Analysis, Context, Result, selected

ORDER = ("attack", "poisoning", "noise", "adjust", "promotion", "rank_change", "landscape", "slices")
"""Where the report puts the analyses it knows; others follow in the order of their names."""


def _discover():
    found = {}
    for info in pkgutil.iter_modules(__path__):
        module = importlib.import_module(f"{__name__}.{info.name}")
        analysis = getattr(module, "ANALYSIS", None)
        if isinstance(analysis, Analysis):
            found[analysis.name] = analysis
    return dict(sorted(found.items(), key=lambda item: (ORDER.index(item[0]) if item[0] in ORDER else len(ORDER),
                                                        item[0])))


ANALYSES = _discover()
NAMES = tuple(name for name, a in ANALYSES.items() if a.option == "analysis")
SETTINGS = {key: entry for a in ANALYSES.values() for key, entry in a.settings.items()}
SETTINGS["analysis"] = (lambda v: v is None or all(isinstance(x, str) and x in NAMES
                                                   for x in (v if isinstance(v, list) else [v])),
                        f"{', '.join(NAMES[:-1])} or {NAMES[-1]} (or a list)")

__all__ = ["ANALYSES", "Analysis", "Context", "NAMES", "Result", "SETTINGS", "selected"]
