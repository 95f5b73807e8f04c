"""Gaussian noise on the embedding layers at inference (MG table 4).

N(0, sigma^2) is added to every tensor of ``noise_targets`` (default: the model's ``perturbation_targets``
of kind ``row`` that are parameters, else its ``nn.Embedding`` tables), ``noise_repeats`` times for each
sigma of ``noise_sigma``; the result is the mean and std of each metric over the draws and its relative
drop. ``noise_relative`` makes sigma a multiple of each tensor's scale (the std of its entries), so one
sweep compares models whose embeddings have different scales. The noise is injected with
``functional_call`` (the model is not modified).
"""
import torch

from recbole_robust import settings
from recbole_robust.errors import RecBoleRobustError
from recbole_robust.model.contract import hook
from recbole_robust.perturb.engine import named_tensor
from recbole_robust.robustness.analyses.base import Analysis
from recbole_robust.robustness.analyses.sweep import SweepAnalysis


def noise_targets(config, model):
    """Names of the tensors ``gaussian_noise`` perturbs: ``noise_targets`` or the embedding tables."""
    names = config["noise_targets"]
    if names is None:
        params = dict(model.named_parameters())
        names = [n for n, kind in hook(model, "perturbation_targets").items() if kind == "row" and n in params]
    if not names:
        names = [f"{n}.weight" for n, m in model.named_modules() if isinstance(m, torch.nn.Embedding)]
    if not names:
        raise RecBoleRobustError(f"{type(model).__name__} has no embedding layers; set noise_targets")
    for name in names:
        named_tensor(model, name)
    return list(names)


def gaussian_noise(model, evaluate, names, sigma, repeats, seed=0, relative=False):
    """Metrics with N(0, sigma^2) added to ``names``, ``repeats`` times: ``{metric: [value of each draw]}``.

    ``evaluate(tensors)`` returns the metrics with ``tensors`` replacing the model's; ``relative``: sigma is a
    multiple of each tensor's scale (the standard deviation of its entries).
    """
    # drawn on the model's device (a GPU's generator draws other numbers than the CPU's for the same seed)
    generator = torch.Generator(device=named_tensor(model, names[0]).device).manual_seed(seed)
    draws = {}
    for _ in range(repeats):
        tensors = {}
        for n in names:
            base = named_tensor(model, n).detach()
            noise = torch.randn(base.shape, generator=generator, device=base.device, dtype=base.dtype)
            tensors[n] = base + sigma * (base.std() if relative else 1.0) * noise
        with torch.no_grad():
            result = evaluate(tensors)
        for metric, value in result.items():
            draws.setdefault(metric, []).append(float(value))
    return draws


class NoiseAnalysis(SweepAnalysis):
    name = "noise"
    heading = "Gaussian noise on the embeddings"
    x_name = "sigma"
    settings = {
        "noise_sigma": settings.NON_NEGATIVE_LIST,
        "noise_relative": settings.BOOL,
        "noise_repeats": settings.POSITIVE_INT,
        "noise_targets": (lambda v: v is None or settings.str_list(v), "a tensor name or a list of them (or ~)"),
    }

    def check(self, config, model):
        noise_targets(config, model)

    def x_label(self, config):
        return "sigma (x each tensor's scale)" if config["noise_relative"] else "sigma"

    def sweep(self, context):
        config, model = context.config, context.trainer.model
        targets = noise_targets(config, model)
        sigmas = settings.as_list(config["noise_sigma"])
        draws = [gaussian_noise(model, lambda t: context.evaluate(t)[0], targets, sigma, config["noise_repeats"],
                                seed=config["seed"], relative=config["noise_relative"]) for sigma in sigmas]
        title = f"N(0, sigma^2) on {'+'.join(targets)}, {config['noise_repeats']} draws"
        return sigmas, draws, title, {"targets": targets, "relative": bool(config["noise_relative"])}

    def log_x(self, xs):
        return len([x for x in xs if x > 0]) > 2


ANALYSIS: Analysis = NoiseAnalysis()
