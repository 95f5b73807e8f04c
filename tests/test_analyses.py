"""The MG paper's robustness analyses produce their numbers and files."""
import os

from recbole_robust import run_recbole_robust
from recbole_robust.robustness.analyses import ANALYSES, NAMES, Result


def test_noise_adjustment_and_landscape(fast):
    result = run_recbole_robust(model="VBPR", dataset="ml-100k", config_dict={
        **fast, "analysis": ["noise", "adjust", "landscape"], "noise_repeats": 3, "noise_sigma": 0.05,
        "adjust_fraction": 0.3, "landscape_points": 4, "landscape_batches": 2,
    })
    analyses = result["analyses"]
    assert list(analyses) == ["noise", "adjust", "landscape"] and all(isinstance(r, Result) for r in analyses.values())
    clean = analyses["noise"].data["clean"]["ndcg@10"]
    noisy = analyses["noise"].data["draws"][0]["ndcg@10"]
    assert len(noisy) == 3 and len(set(noisy)) > 1  # three different draws
    assert analyses["adjust"].data["draws"][0]["ndcg@10"][0] < clean  # swapping 30% of text features hurts
    landscape = analyses["landscape"].data
    assert landscape["losses"].shape == (4, 4) and landscape["losses"].min() > 0
    assert len(landscape["alphas"]) == len(landscape["betas"]) == 4  # the grid, for plots
    assert landscape["flatness"]["rise_over_grid"] > 0  # the trained point is a minimum of the grid's mean
    for name in ("noise", "adjust", "landscape"):
        files = analyses[name].files
        assert set(files) == {"csv", "md", "tex", "png"} and all(os.path.getsize(p) > 0 for p in files.values())


def test_noise_and_adjustment_sweeps_give_one_curve_with_spread(fast):
    result = run_recbole_robust(model="VBPR", dataset="ml-100k", config_dict={
        **fast, "analysis": ["noise", "adjust"], "noise_repeats": 3, "noise_sigma": [0.01, 1.0, 10.0],
        "noise_relative": True, "adjust_fraction": [0.1, 0.9], "adjust_repeats": 2,
    })
    noise, adjust = result["analyses"]["noise"], result["analyses"]["adjust"]
    clean = noise.data["clean"]["ndcg@10"]
    assert noise.data["xs"] == [0.01, 1.0, 10.0] and len(noise.data["draws"]) == 3
    means = [sum(d["ndcg@10"]) / 3 for d in noise.data["draws"]]
    # noise at 10x the embeddings' scale destroys what 1% of it leaves nearly intact
    assert abs(means[0] - clean) < abs(means[2] - clean) and means[2] < clean
    assert adjust.data["xs"] == [0.1, 0.9] and all(len(d["ndcg@10"]) == 2 for d in adjust.data["draws"])
    assert sum(adjust.data["draws"][1]["ndcg@10"]) < sum(adjust.data["draws"][0]["ndcg@10"])
    for analysis in (noise, adjust):
        with open(analysis.files["png"], "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"
        x = "sigma" if analysis is noise else "fraction"
        records = {(r["metric"], r[x]): r for r in analysis.records}
        record = records[("ndcg@10", analysis.data["xs"][-1])]
        # one value a cell, at full precision: the drop is computed from the unrounded metrics
        assert record["relative_drop"] == (record["clean"] - record["perturbed_mean"]) / record["clean"]
        assert record["draws"] == len(analysis.data["draws"][-1]["ndcg@10"])


def test_every_analysis_is_one_registered_entry():
    assert set(NAMES) == {"noise", "adjust", "landscape", "promotion", "rank_change", "poisoning", "slices"}
    assert list(ANALYSES)[0] == "attack" and ANALYSES["attack"].option == "attack"
    for analysis in ANALYSES.values():  # each declares its settings, and every setting is one of the schema's
        from recbole_robust.config import SETTINGS
        assert all(SETTINGS[key] is entry for key, entry in analysis.settings.items())
