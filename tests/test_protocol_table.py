"""The MG paper's figure 3 in ``benchmarks/protocol_table.py``: flatness numbers and the landscape PNG."""
import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks"))
from protocol_table import flatness_rows, plot_landscapes  # noqa: E402


def bowl(curvature, floor):
    grid = np.linspace(-1, 1, 11)
    a, b = np.meshgrid(grid, grid, indexing="ij")
    return grid, grid, floor + curvature * (a ** 2 + b ** 2)


def test_flatness_rows_rank_a_sharper_minimum_above_a_flatter_one():
    rows = {r[0]: r[1:] for r in flatness_rows({"sharp": bowl(2.0, 1.0), "flat": bowl(0.5, 3.0)})}
    assert np.isclose(rows["sharp"][0], 1.0) and np.isclose(rows["flat"][0], 3.0)  # the loss at the trained point
    assert np.isclose(rows["sharp"][1], 4 * rows["flat"][1]) and rows["flat"][1] > 0  # rise within radius 0.5
    assert np.isclose(rows["sharp"][2], 4 * rows["flat"][2])  # rise over the grid


def test_landscapes_of_a_model_with_and_without_mg_share_one_colour_scale(tmp_path, monkeypatch):
    import matplotlib.pyplot as plt

    panels = {"BM3": bowl(2.0, 1.0), "BM3 + MG": bowl(1.0, 1.0), "FREEDOM": bowl(0.01, 0.2),
              "FREEDOM + MG": bowl(0.02, 0.2)}
    figures, original = [], plt.Figure.savefig
    monkeypatch.setattr(plt.Figure, "savefig", lambda self, *a, **k: (figures.append(self), original(self, *a, **k))[1])
    path = plot_landscapes(panels, str(tmp_path / "out" / "landscapes.png"))
    assert os.path.getsize(path) > 0
    axes = [ax for ax in figures[0].axes if ax.get_title()]
    limits = {ax.get_title(): ax.collections[0].get_clim() for ax in axes}
    assert limits["BM3"] == limits["BM3 + MG"] and limits["FREEDOM"] == limits["FREEDOM + MG"]
    assert limits["BM3"][1] > 4 and limits["FREEDOM"][1] < 0.3  # one scale per model: FREEDOM's is not BM3's
