"""The command line: help, a full run with overrides, and every bad input -> one line, exit code 2."""
import os

import numpy as np
import pytest

from conftest import run_cli

QUIET = ["--show_progress=False", "--epochs=1"]


def test_help_documents_every_option(tmp_path):
    proc = run_cli(["--help"], cwd=tmp_path)
    assert proc.returncode == 0
    for option in ("--model", "--dataset", "--config_files", "--data_path", "--build_dir", "--resume", "--saved",
                   "--key=value", "RECBOLE_ROBUST_DATA"):
        assert option in proc.stdout


def test_run_with_config_file_and_overrides(tmp_path, shared, build_dir):
    (tmp_path / "vbpr.yaml").write_text("content_embedding_size: 4\nembedding_size: 16\n")
    proc = run_cli(
        ["--model=VBPR", "--dataset=ml-100k", "--config_files=vbpr.yaml", "--embedding_size=8",
         f"--build_dir={build_dir}", *QUIET],
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    assert "checkpoint: saved/VBPR-" in proc.stdout
    log = open(next((tmp_path / "log" / "VBPR").glob("*.log"))).read()
    assert "embedding_size = 8" in log and "content_embedding_size = 4" in log  # cmd line > file > defaults
    assert "| metric" in log and "best valid" in log and "ndcg@10" in log
    assert len(list((tmp_path / "saved").glob("VBPR-*.pth"))) == 2  # best + .last


def toy_dataset(root, features):
    """A RecBole atomic dataset 'toy' (20 users x 10 items) with one feature file."""
    folder = root / "data" / "toy"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    rows = ["user_id:token\titem_id:token"] + [f"{u}\t{i}" for u in range(20) for i in rng.choice(10, 5, replace=False)]
    (folder / "toy.inter").write_text("\n".join(rows) + "\n")
    if features is not None:
        if isinstance(features, str):
            (folder / "img.npy").write_text(features)
        else:
            np.save(folder / "img.npy", features)
    (root / "toy.yaml").write_text("feature_files: {image: img.npy}\n")
    return ["--dataset=toy", f"--data_path={root / 'data'}", "--config_files=toy.yaml"]


def good_features():
    return np.random.default_rng(1).normal(size=(10, 4))


BAD_INPUTS = {
    "unknown model": (lambda root: ["--model=Nope", "--dataset=ml-100k"], "unknown model 'Nope'"),
    "unknown dataset": (lambda root: ["--model=BPR", "--dataset=nope"], "unknown dataset 'nope'"),
    "missing data files": (
        lambda root: ["--model=BPR", "--dataset=tiktok", f"--data_path={root}"], "dataset 'tiktok' not found"),
    "multimodal model without feature files": (
        lambda root: ["--model=VBPR", "--dataset=amazon"], "image_feat.npy, text_feat.npy not found"),
    "missing feature file": (lambda root: ["--model=VBPR", *toy_dataset(root, None)], "img.npy not found"),
    "feature rows do not match items": (
        lambda root: ["--model=VBPR", *toy_dataset(root, good_features()[:7])], "has 7 rows but item"),
    "NaN features": (
        lambda root: ["--model=VBPR", *toy_dataset(root, np.where(np.eye(10, 4) > 0, np.nan, 1.0))],
        "NaN or Inf values in 4 rows"),
    "Inf features": (
        lambda root: ["--model=VBPR", *toy_dataset(root, np.full((10, 4), np.inf))], "NaN or Inf"),
    "wrong dtype": (
        lambda root: ["--model=VBPR", *toy_dataset(root, np.array([["x"] * 4] * 10))], "expected a real number"),
    "wrong shape": (lambda root: ["--model=VBPR", *toy_dataset(root, np.ones(10))], "expected 2-D"),
    "not an npy file": (lambda root: ["--model=VBPR", *toy_dataset(root, "garbage")], "not a numeric .npy"),
    "missing config file": (
        lambda root: ["--model=BPR", "--dataset=ml-100k", "--config_files=none.yaml"], "config file none.yaml"),
    "invalid VAEGAN variant": (
        lambda root: ["--model=VAEGAN", "--dataset=ml-100k", "--variant=AVB+X"], "variant must be one of AVB"),
    "resume from missing checkpoint": (
        lambda root: ["--model=BPR", "--dataset=ml-100k", "--resume=nope.pth"], "checkpoint nope.pth not found"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_is_one_line_exit_2_nothing_written(case, tmp_path, shared, build_dir):
    make_args, message = BAD_INPUTS[case]
    args = make_args(tmp_path)
    before = set(os.listdir(tmp_path))
    env = {"RECBOLE_ROBUST_DATA": str(shared)} if "--data_path" not in " ".join(args) else {}
    proc = run_cli([*args, f"--build_dir={build_dir}", *QUIET], cwd=tmp_path, env_extra=env)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    error_lines = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(error_lines) == 1 and message in error_lines[0], proc.stderr
    assert set(os.listdir(tmp_path)) == before  # no log/, saved/, checkpoints or partial builds
