"""The papers' tables as commands: their plans, the flatness numbers and the landscape figure of figure 3."""
import os

import numpy as np
import pytest

import recbole_robust_cli as cli
from recbole_robust.errors import RecBoleRobustError
from recbole_robust.robustness.analyses.landscape import flatness
from recbole_robust.robustness.report import landscape_figure
from recbole_robust.tables import MG, TABLES, table_plan


def bowl(curvature, floor):
    grid = np.linspace(-1, 1, 11)
    a, b = np.meshgrid(grid, grid, indexing="ij")
    return grid, grid, floor + curvature * (a ** 2 + b ** 2)


def test_flatness_ranks_a_sharper_minimum_above_a_flatter_one():
    sharp, flat = flatness(*bowl(2.0, 1.0)), flatness(*bowl(0.5, 3.0))
    assert np.isclose(sharp["loss_at_minimum"], 1.0) and np.isclose(flat["loss_at_minimum"], 3.0)  # the trained point
    assert np.isclose(sharp["rise_within_radius"], 4 * flat["rise_within_radius"]) and flat["rise_within_radius"] > 0
    assert np.isclose(sharp["rise_over_grid"], 4 * flat["rise_over_grid"])


def test_landscapes_of_a_model_with_and_without_mg_share_one_colour_scale(tmp_path, monkeypatch):
    import matplotlib.pyplot as plt

    panels = {"BM3": bowl(2.0, 1.0), "BM3 + MG": bowl(1.0, 1.0), "FREEDOM": bowl(0.01, 0.2),
              "FREEDOM + MG": bowl(0.02, 0.2)}
    figures, original = [], plt.Figure.savefig
    monkeypatch.setattr(plt.Figure, "savefig", lambda self, *a, **k: (figures.append(self), original(self, *a, **k))[1])
    path = landscape_figure(str(tmp_path / "out" / "landscapes.png"), panels, "landscapes")
    assert os.path.getsize(path) > 0
    axes = [ax for ax in figures[0].axes if ax.get_title()]
    limits = {ax.get_title(): ax.collections[0].get_clim() for ax in axes}
    assert limits["BM3"] == limits["BM3 + MG"] and limits["FREEDOM"] == limits["FREEDOM + MG"]
    assert limits["BM3"][1] > 4 and limits["FREEDOM"][1] < 0.3  # one scale per model: FREEDOM's is not BM3's


def test_a_table_plans_every_model_with_and_without_mirror_gradient():
    dataset, preset, variants, columns = table_plan("mg3")
    assert (dataset, preset) == ("tiktok", "mg") and columns == ["recall@5", "ndcg@5", "precision@5", "map@5"]
    labels = {label: (model, settings) for label, model, settings in variants}
    assert len(labels) == 2 * len(TABLES["mg3"]["models"])
    assert labels["VBPR"] == ("VBPR", {}) and labels["VBPR + MG"] == ("VBPR", MG)
    _, _, variants, _ = table_plan("mg7", sets=["epochs=5"])  # the command line's settings come after the table's
    labels = {label: (model, settings) for label, model, settings in variants}
    assert labels["SSAM-F"] == ("DRAGON", {"sharpness": "ssam_f", "epochs": 5}) and labels["DRAGON"][1] == {"epochs": 5}
    _, _, variants, _ = table_plan(None, "filmtrust", "acae", ["CAE", "Adv=ACAE"], ["Adv.adv_eps=2"])
    assert variants == [("CAE", "CAE", {}), ("Adv", "ACAE", {"adv_eps": 2})]
    with pytest.raises(RecBoleRobustError, match="unknown table 'mg99'"):
        table_plan("mg99")
    with pytest.raises(RecBoleRobustError, match="--set names Nope"):
        table_plan("mg9", sets=["Nope.epochs=1"])


def test_the_command_names_every_table():
    assert cli.TABLE_NAMES == tuple(TABLES)
