"""The MG paper's robustness analyses produce their numbers and files."""
import os

from recbole_robust import run_recbole_robust


def test_noise_adjustment_and_landscape(fast):
    result = run_recbole_robust(model="VBPR", dataset="ml-100k", config_dict={
        **fast, "analysis": ["noise", "adjust", "landscape"], "noise_repeats": 3, "noise_sigma": 0.05,
        "adjust_fraction": 0.3, "landscape_points": 4, "landscape_batches": 2,
    })
    analysis = result["analysis"]
    clean = analysis["clean"]["ndcg@10"]
    noisy = analysis["noise"]["runs"]["ndcg@10"]
    assert len(noisy) == 3 and len(set(noisy)) > 1  # three different draws
    assert analysis["adjust"]["result"]["ndcg@10"] < clean  # swapping 30% of text features hurts
    losses = analysis["landscape"]["losses"]
    assert losses.shape == (4, 4) and losses.min() > 0
    assert len(analysis["landscape"]["alphas"]) == len(analysis["landscape"]["betas"]) == 4  # the grid, for plots
    for name in ("noise", "adjust", "landscape"):
        report = analysis[name]
        assert all(os.path.getsize(path) > 0 for path in report["files"].values())
