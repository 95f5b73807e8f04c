"""The robustness analyses of the Mirror Gradient paper, on any trained model.

* ``gaussian_noise`` (MG table 4): Gaussian noise N(0, sigma^2) added to the embedding layers at
  inference (every tensor of the model's ``perturbation_targets`` of kind ``row`` that is a
  parameter, or ``noise_targets``), repeated; mean and std of each metric and the relative drop.
  ``noise_relative`` makes sigma a multiple of each tensor's scale (the std of its entries), so one
  sweep compares models whose embeddings have different scales.
* ``information_adjustment`` (MG table 5): a fraction of the items get one modality's feature vector
  replaced by that of another random item. The paper inserted generated image captions into item
  text, which needs the raw text and a captioning model; swapping feature vectors between items is
  the plugin's stand-in for "the content of an item changed after training". A model whose
  predictions depend on its features through structures built from them (FREEDOM's frozen kNN
  item-item graph) provides ``adjusted_features(modality, items, donors)``, which returns every
  tensor that changes, rebuilt as a model loaded on the adjusted data would build it.
* ``loss_landscape`` (MG figure 3, after Li et al. 2018): the training loss at
  theta + a d1 + b d2 on a grid of (a, b), d1 and d2 random Gaussian directions (optionally
  filter-normalised: each row of d scaled to the norm of the same row of theta).

All perturbations are injected with ``functional_call`` (the model is not modified).
"""
import numpy as np
import torch

from recbole_robust.errors import RecBoleRobustError
from recbole_robust.model.contract import hook
from recbole_robust.robustness.attacks import evaluate_with
from recbole_robust.perturb.engine import call_with, named_tensor


def noise_targets(config, model):
    """Names of the tensors ``gaussian_noise`` perturbs: ``noise_targets`` or the embedding tables."""
    names = config["noise_targets"]
    if names is None:
        params = dict(model.named_parameters())
        names = [n for n, kind in hook(model, "perturbation_targets").items() if kind == "row" and n in params]
    if not names:
        names = [n for n, m in model.named_modules() if isinstance(m, torch.nn.Embedding)]
        names = [f"{n}.weight" for n in names]
    if not names:
        raise RecBoleRobustError(f"{type(model).__name__} has no embedding layers; set noise_targets")
    return list(names)


def gaussian_noise(trainer, test_data, names, sigma, repeats, seed=0, relative=False):
    """Metrics with N(0, sigma^2) added to ``names``, ``repeats`` times: ``{metric: [values]}``.

    ``relative``: sigma is a multiple of each tensor's scale (the standard deviation of its entries).
    """
    if sigma < 0 or repeats < 1:
        raise RecBoleRobustError(f"noise_sigma must be >= 0 and noise_repeats >= 1, got {sigma}, {repeats}")
    model = trainer.model
    generator = torch.Generator().manual_seed(seed)
    runs = {}
    for _ in range(repeats):
        tensors = {}
        for n in names:
            base = named_tensor(model, n).detach()
            noise = torch.randn(base.shape, generator=generator).to(base.device, base.dtype)
            tensors[n] = base + sigma * (base.std() if relative else 1.0) * noise
        with torch.no_grad():
            result = evaluate_with(trainer, test_data, tensors)
        for metric, value in result.items():
            runs.setdefault(metric, []).append(float(value))
    return runs


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


def information_adjustment(trainer, test_data, modality, fraction, seed=0):
    """Metrics after ``fraction`` of the items get ``modality``'s features of another random item."""
    model = trainer.model
    if not 0 < fraction <= 1:
        raise RecBoleRobustError(f"adjust_fraction must be in (0, 1], got {fraction}")
    name, columns = model.modality_location(modality)
    base = named_tensor(model, name).detach()
    n_items = base.shape[0] - 1  # row 0 is padding
    rng = np.random.default_rng(seed)
    changed = torch.from_numpy(rng.choice(np.arange(1, n_items + 1), max(1, int(round(fraction * n_items))), replace=False))
    donors = torch.from_numpy(rng.integers(1, n_items + 1, len(changed)))
    with torch.no_grad():
        if hook(model, "adjusted_features"):
            tensors = model.adjusted_features(modality, changed.to(base.device), donors.to(base.device))
        else:
            adjusted = base.clone()
            adjusted[changed, columns] = base[donors, columns]
            tensors = {name: adjusted}
        return evaluate_with(trainer, test_data, tensors), len(changed)


def loss_landscape(model, batches, span, points, normalise=True, seed=0):
    """Training loss on a ``points`` x ``points`` grid of (a, b) in [-span, span]^2.

    Returns ``(alphas, betas, losses[points, points])``.
    """
    if span <= 0 or points < 2:
        raise RecBoleRobustError(f"landscape_span must be > 0 and landscape_points >= 2, got {span}, {points}")
    generator = torch.Generator().manual_seed(seed)
    params = {n: p.detach() for n, p in model.named_parameters()}

    def direction():
        d = {}
        for n, p in params.items():
            r = torch.randn(p.shape, generator=generator).to(p.device, p.dtype)
            if normalise:
                if p.dim() <= 1:
                    r = r * p.norm() / r.norm().clamp_min(1e-12)
                else:
                    r = r * p.norm(dim=-1, keepdim=True) / r.norm(dim=-1, keepdim=True).clamp_min(1e-12)
            d[n] = r
        return d

    d1, d2 = direction(), direction()
    grid = np.linspace(-span, span, points)
    losses = np.zeros((points, points))
    model.eval()
    with torch.no_grad():
        for i, a in enumerate(grid):
            for j, b in enumerate(grid):
                tensors = {n: p + a * d1[n] + b * d2[n] for n, p in params.items()}
                total = sum(float(call_with(model, tensors, model.calculate_loss, batch)) for batch in batches)
                losses[i, j] = total / len(batches)
    return grid, grid, losses
