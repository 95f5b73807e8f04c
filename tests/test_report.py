"""One robustness report over several checkpoints: every section, settings, full-precision CSVs, LaTeX, the CLI."""
import csv
import os

from recbole_robust import run_recbole_robust
from recbole_robust.pipelines import parse_groups, robustness_report


def read_csv(path):
    with open(path, encoding="utf-8") as f:
        return list(csv.DictReader(f))


def test_report_over_two_models_and_two_seeds(fast, tmp_path):
    checkpoints = {}
    for label, extra, seeds in (("VBPR", {}, (1, 2)), ("VBPR+MG", {"mirror_gradient": True}, (1,))):
        for seed in seeds:
            run = run_recbole_robust(model="VBPR", dataset="ml-100k",
                                     config_dict={**fast, "epochs": 1, "seed": seed, **extra})
            checkpoints.setdefault(label, []).append(run["saved_model_file"])
    settings = {**fast, "attack": ["fgm", "pgd"], "attack_eps": [1.0], "attack_steps": 2,
                "analysis": ["noise", "promotion", "rank_change"], "noise_sigma": [0.1, 1.0], "noise_relative": True,
                "noise_repeats": 1, "promotion_items": 5, "promotion_eps": [1.0]}
    groups = parse_groups([f"{label}={','.join(paths)}" for label, paths in checkpoints.items()])
    out = tmp_path / "report"
    results, paths = robustness_report(groups, "ml-100k", config_dict=settings, out_dir=str(out))

    assert list(results) == ["VBPR", "VBPR+MG"] and [len(r) for r in results.values()] == [2, 1]
    markdown = open(paths["md"], encoding="utf-8").read()
    for section in ("Settings", "Clean test metrics", "Paired t-tests against VBPR", "Attacks at test time",
                    "Gaussian noise on the embeddings", "Item promotion", "Rank change"):
        assert section in markdown
    settings_rows = {r["setting"]: r["value"] for r in read_csv(out / "settings.csv")}
    assert settings_rows["PGD"].startswith("2 steps of 1.25 x eps")  # Madry's rule: 2.5 / steps
    assert "L2 norm per row" in settings_rows["attacks"] and "RecBole 1.2.1" in settings_rows["versions"]
    assert settings_rows["checkpoints of VBPR (n)"] == "2: seeds 1, 2"
    page = open(paths["html"], encoding="utf-8").read()
    images = [line for line in markdown.splitlines() if line.startswith("![")]
    assert len(images) == page.count("data:image/png;base64,") == 4  # one attack target, noise, promotion, ranks
    assert "<img src='data:image/png" in page and ".png'" not in page  # nothing outside the file

    clean = {r["model"]: r for r in read_csv(out / "clean.csv")}
    assert set(clean) == {"VBPR", "VBPR+MG", "chance (Random)", "popularity (Pop)"}
    assert clean["VBPR"]["n"] == "2" and clean["chance (Random)"]["n"] == "2"  # one baseline per seed's split
    exact = [r["clean"]["ndcg@10"] for r in results["VBPR"]]
    assert float(clean["VBPR"]["ndcg@10_mean"]) == sum(exact) / 2 and any(len(repr(v)) > 8 for v in exact)
    assert float(clean["chance (Random)"]["ndcg@10_mean"]) < float(clean["VBPR"]["ndcg@10_mean"])

    attacks = read_csv(out / "attacks.csv")
    # 2 models x (fgm, pgd, random) x 1 eps, one value a cell, each with a paired t-test across users
    assert len(attacks) == 6 and all(0 <= float(r["p"]) <= 1 for r in attacks)
    assert {"clean_mean", "clean_std", "attacked_mean", "attacked_std", "n"} <= set(attacks[0])
    pgd = [r for r in attacks if r["attack"] == "pgd" and r["model"] == "VBPR"]
    assert all(float(r["clean_mean"]) > float(r["attacked_mean"]) and r["n"] == "2" for r in pgd)
    for r in attacks:  # the drop is each checkpoint's own, from unrounded metrics
        runs = results[r["model"]]
        drops = []
        for run in runs:
            row = next(x for x in run["analyses"]["attack"].data["rows"] if x["method"] == r["attack"])
            drops.append((run["clean"][r["metric"]] - row[r["metric"]]) / run["clean"][r["metric"]])
        assert abs(float(r["relative_drop_mean"]) - sum(drops) / len(drops)) < 1e-12
    for name in ("settings", "clean", "t_tests", "attacks", "noise", "promotion", "rank_change"):
        assert os.path.getsize(out / f"{name}.csv") > 0
        tex = (out / f"{name}.tex").read_text()
        assert "\\toprule" in tex and "\\bottomrule" in tex and "±" not in tex  # booktabs, LaTeX's \pm
    assert "\\begin{table}" in (out / "tables.tex").read_text()
    assert os.path.isdir(out / "runs" / "VBPR-1")  # each checkpoint's own files


def test_report_of_models_trained_by_the_command(tmp_path, small_data, build_dir, monkeypatch, capsys):
    """``recbole-robust report --models ... --seeds ...``: every label trained once per seed, then reported."""
    import recbole_robust_cli as cli

    monkeypatch.chdir(tmp_path)
    argv = ["report", "--dataset=ml-100k", "--models", "VBPR", "MG=VBPR", "--seeds", "1", "2", "--set",
            "MG.mirror_gradient=True", f"--report_dir={tmp_path / 'r'}", "--attack=fgm", "--attack_eps=[0.5]",
            f"--build_dir={build_dir}", "--show_progress=False", "--state=WARNING", "--epochs=1"]
    assert cli.main(argv) == 0, capsys.readouterr().err
    assert "robustness report:" in capsys.readouterr().out
    assert (tmp_path / "r" / "report.html").stat().st_size > 0
    assert len(list((tmp_path / "r" / "checkpoints").glob("VBPR-*[0-9a-f].pth"))) == 4  # 2 labels x 2 seeds
    clean = {r["model"]: r for r in read_csv(tmp_path / "r" / "clean.csv")}
    assert clean["VBPR"]["n"] == clean["MG"]["n"] == "2"
    assert float(clean["MG"]["recall@10_mean"]) != float(clean["VBPR"]["recall@10_mean"])  # MG trained differently
    command = {r["setting"]: r["value"] for r in read_csv(tmp_path / "r" / "settings.csv")}["command"]
    assert command.startswith("recbole-robust report --dataset=ml-100k --models VBPR MG=VBPR")
