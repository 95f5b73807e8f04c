"""The training-loss landscape (MG figure 3, after Li et al. 2018).

The training loss at theta + a d1 + b d2 on a ``landscape_points`` x ``landscape_points`` grid of (a, b) in
[-``landscape_span``, ``landscape_span``]^2, averaged over the first ``landscape_batches`` training batches (their
negatives drawn once); d1 and d2 are random Gaussian directions, filter-normalised with
``landscape_normalize`` (each row of d scaled to the norm of the same row of theta). Flatness is summarised by
the loss at the trained point and its mean rise within 0.5 of it and over the grid (a flatter minimum rises
less). The parameters are injected with ``functional_call`` (the model is not modified).
"""
import numpy as np
import torch

from recbole_robust import settings
from recbole_robust.perturb.engine import call_with
from recbole_robust.robustness.analyses.base import Analysis, Result
from recbole_robust.robustness.report import Column, landscape_figure

FLAT_RADIUS = 0.5


def loss_landscape(model, batches, span, points, normalise=True, seed=0):
    """Training loss on a ``points`` x ``points`` grid of (a, b) in [-span, span]^2: ``(alphas, betas, losses)``."""
    params = {n: p.detach() for n, p in model.named_parameters()}
    # drawn on the model's device (a GPU's generator draws other numbers than the CPU's for the same seed)
    generator = torch.Generator(device=next(iter(params.values())).device).manual_seed(seed)

    def direction():
        d = {}
        for n, p in params.items():
            r = torch.randn(p.shape, generator=generator, device=p.device, dtype=p.dtype)
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


def flatness(alphas, betas, losses, radius=FLAT_RADIUS):
    """The loss at the trained point, and its mean rise within ``radius`` of it and over the whole grid."""
    a, b = np.meshgrid(alphas, betas, indexing="ij")
    centre = float(losses[np.argmin(np.abs(alphas)), np.argmin(np.abs(betas))])
    near = np.hypot(a, b) <= radius
    return {"loss_at_minimum": centre, "rise_within_radius": float((losses[near] - centre).mean()),
            "rise_over_grid": float((losses - centre).mean())}


COLUMNS = [Column("loss at the trained point", "loss_at_minimum"),
           Column(f"mean rise within {FLAT_RADIUS}", "rise_within_radius"),
           Column("mean rise over the grid", "rise_over_grid")]


class LandscapeAnalysis(Analysis):
    name = "landscape"
    heading = "Training-loss landscapes"
    settings = {
        "landscape_span": settings.POSITIVE,
        "landscape_points": (lambda v: settings.is_int(v) and v >= 2, "an integer >= 2"),
        "landscape_batches": settings.POSITIVE_INT,
        "landscape_normalize": settings.BOOL,
    }

    def run(self, context):
        config = context.config
        batches = [b.to(config["device"]) for _, b in zip(range(config["landscape_batches"]), context.train_data)]
        alphas, betas, losses = loss_landscape(context.trainer.model, batches, config["landscape_span"],
                                               config["landscape_points"], config["landscape_normalize"],
                                               seed=config["seed"])
        records = [{"alpha": float(a), "beta": float(b), "loss": float(losses[i, j])}
                   for i, a in enumerate(alphas) for j, b in enumerate(betas)]
        summary = flatness(alphas, betas, losses)
        title = (f"training loss on a {len(alphas)} x {len(betas)} grid of two random "
                 f"{'filter-normalised ' if config['landscape_normalize'] else ''}directions, "
                 f"{len(batches)} batches")
        return Result(self.name, title, records, COLUMNS, {"alphas": alphas, "betas": betas, "losses": losses,
                                                           "flatness": summary}, shown=[summary])

    def plot(self, result, path, title):
        landscape_figure(path, {title: (result.data["alphas"], result.data["betas"], result.data["losses"])},
                         f"training loss landscape ({result.title.split(',')[0]})")
        return True

    def section(self, report, results):
        panels = {label: (runs[0].data["alphas"], runs[0].data["betas"], runs[0].data["losses"])
                  for label, runs in results.items()}
        first = next(iter(results.values()))[0]
        path = landscape_figure(report.path(self.name), panels,
                                f"{report.dataset}: training loss landscapes (first checkpoint of each model)")
        report.heading(self.heading)
        report.text(first.title.capitalize() + "; the first checkpoint of each model. A model with and without "
                    "Mirror Gradient share one colour scale.")
        report.figure(path, "training-loss landscapes, one panel per model")
        records = [{"model": label, **runs[0].data["flatness"]} for label, runs in results.items()]
        report.table("flatness", "Flatness of the minimum (first checkpoint of each model)", records,
                     [Column("model", kind="str"), *COLUMNS])


ANALYSIS: Analysis = LandscapeAnalysis()
