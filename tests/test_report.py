"""One robustness report over several checkpoints: every section, self-contained HTML, the CLI."""
import csv
import os

from conftest import run_cli
from recbole_robust import run_recbole_robust
from recbole_robust.pipelines import parse_groups, robustness_report


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
    results, paths = robustness_report(groups, "ml-100k", config_dict=settings, out_dir=str(tmp_path / "report"))

    assert list(results) == ["VBPR", "VBPR+MG"] and [len(r) for r in results.values()] == [2, 1]
    markdown = open(paths["md"], encoding="utf-8").read()
    for section in ("Clean test metrics", "Paired t-tests against VBPR", "Attacks at test time",
                    "Gaussian noise on the embeddings", "Item promotion", "Rank change"):
        assert section in markdown
    page = open(paths["html"], encoding="utf-8").read()
    images = [line for line in markdown.splitlines() if line.startswith("![")]
    assert len(images) == page.count("data:image/png;base64,") >= 6  # fgm, pgd, random curves, noise, promotion, ranks
    assert "<img src='data:image/png" in page and ".png'" not in page  # nothing outside the file
    with open(tmp_path / "report" / "attacks.csv") as f:
        rows = list(csv.DictReader(f))
    # 2 models x (fgm, pgd, random) x 1 eps, each with a paired t-test across users
    assert len(rows) == 6 and all(0 <= float(r["p"]) <= 1 for r in rows)
    pgd = [r for r in rows if r["attack"] == "pgd" and r["model"] == "VBPR"]
    assert all(float(r["clean"]) > float(r["attacked"].split(" ± ")[0]) for r in pgd)
    for name in ("clean", "t_tests", "noise", "promotion", "rank_change"):
        assert os.path.getsize(tmp_path / "report" / f"{name}.csv") > 0
    assert os.path.isdir(tmp_path / "report" / "runs" / "VBPR-1")  # each checkpoint's own files


def test_report_from_the_command_line(fast, tmp_path, small_data, build_dir):
    run = run_recbole_robust(model="VBPR", dataset="ml-100k", config_dict={**fast, "epochs": 1})
    proc = run_cli(["--dataset=ml-100k", "--robustness_report", f"A={run['saved_model_file']}",
                    f"--report_dir={tmp_path / 'r'}", "--attack=fgm", "--attack_eps=[0.5]", f"--build_dir={build_dir}",
                    "--show_progress=False"], cwd=tmp_path, env_extra={"RECBOLE_ROBUST_DATA": str(small_data)})
    assert proc.returncode == 0, proc.stderr
    assert "robustness report:" in proc.stdout
    assert (tmp_path / "r" / "report.html").stat().st_size > 0
