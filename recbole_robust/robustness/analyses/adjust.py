"""Information adjustment (MG table 5): a share of the items get one modality's features replaced.

For each fraction of ``adjust_fraction``, that share of the items (drawn with seeds seed, seed + 1, ... for
``adjust_repeats`` draws) get the ``adjust_modality`` feature vector of another random item. The paper
inserted generated image captions into item text, which needs the raw text and a captioning model; swapping
feature vectors between items is the plugin's stand-in for "the content of an item changed after
training". A model whose predictions depend on its features through structures built from them (FREEDOM's
frozen kNN item-item graph) provides ``adjusted_features(modality, items, donors)``, which returns every
tensor that changes, rebuilt as a model loaded on the adjusted data would build it.
"""
import numpy as np
import torch

from recbole_robust import settings
from recbole_robust.errors import RecBoleRobustError
from recbole_robust.model.contract import hook
from recbole_robust.perturb.engine import named_tensor
from recbole_robust.robustness.analyses.base import Analysis
from recbole_robust.robustness.analyses.sweep import SweepAnalysis


def adjust_modality(config, model):
    """The modality ``information_adjustment`` changes: ``adjust_modality``, else text, else the first."""
    modalities = list(hook(model, "modalities"))
    if not hook(model, "modality_location") or not modalities:
        raise RecBoleRobustError(f"{type(model).__name__} has no item content features to adjust")
    modality = config["adjust_modality"] or ("text" if "text" in modalities else modalities[0])
    if modality not in modalities:
        raise RecBoleRobustError(f"adjust_modality {modality} is not one of {type(model).__name__}'s modalities "
                                 f"({', '.join(modalities)})")
    return modality


def information_adjustment(model, evaluate, modality, fraction, seed=0):
    """Metrics (``evaluate(tensors)``) after ``fraction`` of the items get ``modality``'s features of another
    random item; returns ``(metrics, number of items changed)``."""
    name, columns = model.modality_location(modality)
    base = named_tensor(model, name).detach()
    n_items = base.shape[0] - 1  # row 0 is padding
    rng = np.random.default_rng(seed)
    changed = torch.from_numpy(rng.choice(np.arange(1, n_items + 1), max(1, int(round(fraction * n_items))),
                                          replace=False))
    donors = torch.from_numpy(rng.integers(1, n_items + 1, len(changed)))
    with torch.no_grad():
        if hook(model, "adjusted_features"):
            tensors = model.adjusted_features(modality, changed.to(base.device), donors.to(base.device))
        else:
            adjusted = base.clone()
            adjusted[changed, columns] = base[donors, columns]
            tensors = {name: adjusted}
        return evaluate(tensors), len(changed)


class AdjustAnalysis(SweepAnalysis):
    name = "adjust"
    heading = "Information adjustment"
    x_name = "fraction"
    settings = {
        "adjust_fraction": (lambda v: settings.number_list(v, 0, inclusive=False, high=1),
                            "a number in (0, 1] or a list of them"),
        "adjust_repeats": settings.POSITIVE_INT,
        "adjust_modality": (lambda v: v is None or isinstance(v, str), "a modality name (or ~)"),
    }

    def check(self, config, model):
        adjust_modality(config, model)

    def x_label(self, config):
        return "share of items adjusted"

    def sweep(self, context):
        config, model = context.config, context.trainer.model
        modality = adjust_modality(config, model)
        fractions, draws = settings.as_list(config["adjust_fraction"]), []
        for fraction in fractions:
            results = [information_adjustment(model, lambda t: context.evaluate(t)[0], modality, fraction,
                                              seed=config["seed"] + r)[0] for r in range(config["adjust_repeats"])]
            draws.append({m: [float(r[m]) for r in results] for m in results[0]})
        title = f"{modality} features of a share of the items replaced by another item's, {config['adjust_repeats']} draws"
        return fractions, draws, title, {"modality": modality}


ANALYSIS: Analysis = AdjustAnalysis()
