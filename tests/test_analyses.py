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
    noisy = analysis["noise"]["runs"][0]["ndcg@10"]
    assert len(noisy) == 3 and len(set(noisy)) > 1  # three different draws
    assert analysis["adjust"]["results"][0]["ndcg@10"][0] < clean  # swapping 30% of text features hurts
    losses = analysis["landscape"]["losses"]
    assert losses.shape == (4, 4) and losses.min() > 0
    assert len(analysis["landscape"]["alphas"]) == len(analysis["landscape"]["betas"]) == 4  # the grid, for plots
    for name in ("noise", "adjust", "landscape"):
        report = analysis[name]
        assert all(os.path.getsize(path) > 0 for path in report["files"].values())


def test_noise_and_adjustment_sweeps_give_one_curve_with_spread(fast):
    result = run_recbole_robust(model="VBPR", dataset="ml-100k", config_dict={
        **fast, "analysis": ["noise", "adjust"], "noise_repeats": 3, "noise_sigma": [0.01, 1.0, 10.0],
        "noise_relative": True, "adjust_fraction": [0.1, 0.9], "adjust_repeats": 2,
    })
    analysis = result["analysis"]
    clean = analysis["clean"]["ndcg@10"]
    noise = analysis["noise"]
    assert noise["sigmas"] == [0.01, 1.0, 10.0] and len(noise["runs"]) == 3
    means = [sum(r["ndcg@10"]) / 3 for r in noise["runs"]]
    # noise at 10x the embeddings' scale destroys what 1% of it leaves nearly intact
    assert abs(means[0] - clean) < abs(means[2] - clean) and means[2] < clean
    adjust = analysis["adjust"]
    assert adjust["fractions"] == [0.1, 0.9] and all(len(r["ndcg@10"]) == 2 for r in adjust["results"])
    assert sum(adjust["results"][1]["ndcg@10"]) < sum(adjust["results"][0]["ndcg@10"])
    for name in ("noise", "adjust"):
        with open(analysis[name]["files"]["png"], "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"
        assert "sigma" in open(analysis[name]["files"]["md"]).read() or name == "adjust"
