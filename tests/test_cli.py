"""The command line: help, a full run with overrides, and every bad input -> one line, exit code 2."""
import os

import numpy as np
import pytest
import torch

from conftest import run_cli

QUIET = ["--show_progress=False", "--epochs=1"]


def test_help_documents_every_option(tmp_path):
    proc = run_cli(["--help"], cwd=tmp_path)
    assert proc.returncode == 0
    for option in ("--model", "--dataset", "--config_files", "--data_path", "--build_dir", "--resume", "--saved",
                   "--seeds", "--threads", "--key=value", "RECBOLE_ROBUST_DATA", "train, report, tune, table"):
        assert option in proc.stdout
    for command, option in (("report", "--models"), ("tune", "--space"), ("table", "mg-fig3")):
        proc = run_cli([command, "--help"], cwd=tmp_path)
        assert proc.returncode == 0 and option in proc.stdout


def test_help_and_malformed_command_lines_are_answered_without_importing_the_package(tmp_path):
    """The command parses before it imports the package (PyTorch, RecBole: seconds)."""
    import subprocess
    import sys

    from conftest import REPO

    code = ("import sys, recbole_robust_cli as cli\n"
            "for argv in (['--help'], ['report', '--help'], ['--model=BPR', '--epochs=1', '--epochs=2']):\n"
            "    try:\n        cli.main(argv)\n    except SystemExit:\n        pass\n"
            "print(sorted(m for m in ('torch', 'recbole', 'recbole_robust') if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert proc.stdout.strip().endswith("[]"), proc.stdout + proc.stderr
    assert "error: option --epochs is given more than once" in proc.stderr


def test_run_with_config_file_and_overrides(tmp_path, build_dir):
    (tmp_path / "vbpr.yaml").write_text("content_embedding_size: 4\nembedding_size: 16\n")
    proc = run_cli(
        ["--model=VBPR", "--dataset=ml-100k", "--config_files=vbpr.yaml", "--embedding_size=8",
         f"--build_dir={build_dir}", *QUIET],
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    assert "checkpoint: saved/VBPR-" in proc.stdout
    log_file = next((tmp_path / "log" / "VBPR").glob("*.log"))
    log = log_file.read_text()
    assert "embedding_size = 8" in log and "content_embedding_size = 4" in log  # cmd line > file > defaults
    assert "| metric" in log and "best valid" in log and "ndcg@10" in log
    assert "PyTorch threads: " in log
    checkpoints = sorted(p.name for p in (tmp_path / "saved").glob("VBPR-*.pth"))
    assert checkpoints == [f"{log_file.stem}.last.pth", f"{log_file.stem}.pth"]  # best + .last, the log's id


def test_several_seeds_in_one_command(tmp_path, build_dir, monkeypatch, capsys):
    import recbole_robust_cli as cli

    monkeypatch.chdir(tmp_path)
    code = cli.main(["--model=BPR", "--dataset=ml-100k", "--seeds", "1", "2", f"--build_dir={build_dir}",
                     "--state=WARNING", *QUIET])
    out = capsys.readouterr().out
    assert code == 0, out
    table = [line for line in out.splitlines() if line.startswith("| ndcg@10")]
    assert len(table) == 1 and "±" in table[0] and "seed 1" in out and "seed 2" in out and "(n=2)" in out
    checkpoints = [line.split(": ", 1)[1] for line in out.splitlines() if line.startswith("checkpoint (seed")]
    assert len(checkpoints) == 2 and all(os.path.isfile(c) for c in checkpoints)
    assert torch.load(checkpoints[1], weights_only=True)["config"]["seed"] == 2


def test_threads_default_to_the_cpus_available(monkeypatch, tmp_path):
    from recbole_robust import utils
    from recbole_robust.quick_start import make_config, use_threads

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3, 4, 5})
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    quota = tmp_path / "cpu.max"
    quota.write_text("300000 100000\n")  # a cgroup quota of 3 CPUs
    assert utils.available_cpus(str(quota)) == 3
    quota.write_text("max 100000\n")
    assert utils.available_cpus(str(quota)) == 6  # no quota: the affinity mask
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    assert utils.available_cpus(str(quota)) == 2  # the user's OpenMP setting
    before = torch.get_num_threads()
    try:
        use_threads(make_config("BPR", "ml-100k", config_dict={"threads": 1}))
        assert torch.get_num_threads() == 1
        monkeypatch.setattr("recbole_robust.quick_start.available_cpus", lambda: 2)
        use_threads(make_config("BPR", "ml-100k"))
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def toy_dataset(root, features, inter=None):
    """A RecBole atomic dataset 'toy' (20 users x 10 items) with one feature file."""
    folder = root / "data" / "toy"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    rows = ["user_id:token\titem_id:token"] + [f"{u}\t{i}" for u in range(20) for i in rng.choice(10, 5, replace=False)]
    (folder / "toy.inter").write_text("\n".join(rows) + "\n" if inter is None else inter)
    if features is not None:
        if isinstance(features, str):
            (folder / "img.npy").write_text(features)
        elif isinstance(features, bytes):
            (folder / "img.npy").write_bytes(features)
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
    # settings are validated (and parsed as literals, never evaluated) before anything runs
    "attack method": (lambda root: [*BPR, "--attack=bogus"], "attack must be one of fgm, sign, random"),
    "analysis name": (lambda root: [*BPR, "--analysis=bogus"],
                      "analysis must be poisoning, noise, adjust, promotion, rank_change, landscape or slices"),
    "pgd steps": (lambda root: [*BPR, "--attack=pgd", "--attack_steps=0"], "attack_steps must be an integer >= 1"),
    "pgd step size": (lambda root: [*BPR, "--attack=pgd", "--attack_step_size=-1"], "attack_step_size must be a number > 0"),
    "valid attack": (lambda root: [*BPR, "--valid_attack=bogus"], "valid_attack must be one of fgm, sign, random, pgd"),
    "promotion without features": (lambda root: [*BPR, "--analysis=promotion"], "BPR has no item content features"),
    "promotion items": (lambda root: [*BPR, "--promotion_items=0"], "promotion_items must be an integer >= 1"),
    "attack metric not evaluated": (
        lambda root: [*BPR, "--attack=fgm", "--attack_metric=hit@99"], "attack_metric hit@99 is not among"),
    "attack target": (
        lambda root: [*BPR, "--attack=fgm", "--attack_targets=[nope.weight]"], "cannot be perturbed at 'nope.weight'"),
    "learning_rate <= 0": (lambda root: [*BPR, "--learning_rate=0"], "learning_rate must be a number > 0, got 0"),
    "epochs <= 0": (lambda root: [*BPR, "--epochs=-1"], "epochs must be an integer >= 1, got -1"),
    "epochs not a number": (lambda root: [*BPR, "--epochs=abc"], "epochs must be an integer >= 1, got 'abc'"),
    "embedding_size <= 0": (lambda root: [*BPR, "--embedding_size=0"], "embedding_size must be an integer >= 1"),
    "topk with 0": (lambda root: [*BPR, "--topk=[0,5]"], "topk must be an integer >= 1"),
    "eval_args not a mapping": (lambda root: [*BPR, "--eval_args={bad"], "eval_args must be a mapping"),
    "unknown metric": (lambda root: [*BPR, "--metrics=['Nope']"], "metrics must be RecBole metric names"),
    "unknown learner": (lambda root: [*BPR, "--learner=adamw2"], "learner must be one of adam"),
    "code in a value": (
        lambda root: [*BPR, "--epochs=__import__('os').system('touch pwned')"], "epochs must be an integer"),
    "repeated option": (lambda root: [*BPR, "--epochs=2", "--epochs=3"], "option --epochs is given more than once"),
    "space-separated setting": (lambda root: [*BPR, "--learning_rate", "0.1"], "unrecognised argument '--learning_rate'"),
    "bad CLI option value": (lambda root: [*BPR, "--tune=AMR", "--num_samples=x"], "invalid int value: 'x'"),
    "empty config file": (lambda root: [*BPR, f"--config_files={write(root, 'c.yaml', '')}"], "c.yaml is empty"),
    "invalid YAML config file": (
        lambda root: [*BPR, f"--config_files={write(root, 'c.yaml', 'a: [1')}"], "c.yaml is not valid YAML"),
    "list config file": (
        lambda root: [*BPR, f"--config_files={write(root, 'c.yaml', '- 1')}"], "must hold a mapping of settings, not a list"),
    "scalar config file": (
        lambda root: [*BPR, f"--config_files={write(root, 'c.yaml', '3')}"], "must hold a mapping of settings, not a int"),
    "bad value in a config file": (
        lambda root: [*BPR, f"--config_files={write(root, 'c.yaml', 'epochs: 0')}"], "c.yaml: epochs must be"),
    "empty search space": (
        lambda root: [*BPR, f"--tune={write(root, 's.yaml', '')}"], "search space s.yaml is empty"),
    "list search space": (
        lambda root: [*BPR, f"--tune={write(root, 's.yaml', '- 1')}"], "must hold a mapping of settings, not a list"),
    "code in a search space": (
        lambda root: [*BPR, f"--tune={write(root, 's.yaml', CODE_SPACE)}"], "learning_rate must be a number > 0"),
    "0-byte feature file": (lambda root: ["--model=VBPR", *toy_dataset(root, b"")], "not a numeric .npy"),
    "empty ratings file": (lambda root: [*ratings(root, ""), "--model=BPR"], "ratings.txt is empty"),
    "2-column ratings file": (lambda root: [*ratings(root, "1 1\n2 2\n"), "--model=BPR"], "line 1 lacks a column"),
    "empty atomic .inter": (lambda root: ["--model=BPR", *toy_dataset(root, None, inter="")], "toy.inter is empty"),
    "atomic .inter with a header only": (
        lambda root: ["--model=BPR", *toy_dataset(root, None, inter="user_id:token\titem_id:token\n")],
        "toy.inter holds no interactions"),
    "checkpoint: a bare tensor": (
        lambda root: [*BPR, f"--checkpoint={save(root, torch.zeros(3))}"], "not a RecBole checkpoint (it holds Tensor)"),
    "checkpoint: a plain state_dict": (
        lambda root: [*BPR, f"--checkpoint={save(root, {'w': torch.zeros(3)})}"], "a dict without config"),
    "checkpoint without config": (
        lambda root: [*BPR, f"--resume={save(root, {'state_dict': {}})}"], "a dict without config"),
    "pickled dataset cache": (
        lambda root: [*BPR, f"--checkpoint_dir={pickled_cache(root)}"], "would be unpickled"),
    "RecBole's dataset pickling": (lambda root: [*BPR, "--save_dataset=True"], "save_dataset is not supported"),
    "strong generalisation of a non-autoencoder": (
        lambda root: [*BPR, "--preset=vaegan_strong"], "BPR learns a vector per user"),
    "report of a missing checkpoint": (
        lambda root: ["--dataset=ml-100k", "--robustness_report", "A=nope.pth"], "checkpoint nope.pth not found"),
    "report of a foreign file": (
        lambda root: ["--dataset=ml-100k", "--robustness_report", f"A={save(root, torch.zeros(3))}"],
        "not a RecBole checkpoint"),
}
BPR = ["--model=BPR", "--dataset=ml-100k"]
CODE_SPACE = "learning_rate: {grid: [\"__import__('os').system('touch pwned')\"]}\n"


def write(root, name, text):
    (root / name).write_text(text)
    return name


def save(root, obj):
    torch.save(obj, root / "foreign.pth")
    return "foreign.pth"


def ratings(root, text):
    (root / "data" / "filmtrust").mkdir(parents=True)
    (root / "data" / "filmtrust" / "ratings.txt").write_text(text)
    return ["--dataset=filmtrust", f"--data_path={root / 'data'}"]


def pickled_cache(root):
    (root / "cache").mkdir()
    (root / "cache" / "ml-100k-Dataset.pth").write_bytes(b"not looked at")
    return root / "cache"


SUBPROCESS_CASES = ("unknown model", "code in a value", "repeated option", "report of a foreign file")
"""Cases also run as a real process of the command (exit code and stderr as a shell sees them); every case runs
in-process through the command's own ``main``, which is what the process calls."""


def bad_input(case, root, small_data, build_dir):
    make_args, message = BAD_INPUTS[case]
    args = make_args(root)
    env = {"RECBOLE_ROBUST_DATA": str(small_data)} if "--data_path" not in " ".join(args) else {}
    quiet = [q for q in QUIET if not any(a.startswith(q.split("=")[0] + "=") for a in args)]
    return [*args, f"--build_dir={build_dir}", *quiet], env, message


def check_refusal(code, stderr, message, root, before):
    assert code == 2, stderr
    assert "Traceback" not in stderr
    error_lines = [line for line in stderr.splitlines() if line.startswith("error: ")]
    assert len(error_lines) == 1 and message in error_lines[0], stderr
    assert sorted(str(p) for p in root.rglob("*")) == before  # no log/, saved/, checkpoints or builds
    assert not (root / "pwned").exists()


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_is_one_line_exit_2_nothing_written(case, tmp_path, small_data, build_dir, monkeypatch, capsys):
    import recbole_robust_cli as cli

    args, env, message = bad_input(case, tmp_path, small_data, build_dir)
    before = sorted(str(p) for p in tmp_path.rglob("*"))
    monkeypatch.chdir(tmp_path)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    code = cli.main(args)
    check_refusal(code, capsys.readouterr().err, message, tmp_path, before)


@pytest.mark.parametrize("case", SUBPROCESS_CASES)
def test_bad_input_from_a_real_process(case, tmp_path, small_data, build_dir):
    args, env, message = bad_input(case, tmp_path, small_data, build_dir)
    before = sorted(str(p) for p in tmp_path.rglob("*"))
    proc = run_cli(args, cwd=tmp_path, env_extra=env)
    check_refusal(proc.returncode, proc.stderr, message, tmp_path, before)


@pytest.mark.parametrize("folder", ["checkpoint_dir", "build_dir", "working folder", "--resume folder"])
def test_read_only_folder_is_refused_up_front(folder, tmp_path, small_data, monkeypatch, capsys):
    """Each folder a run writes to is checked before anything is written. Tests run as root, which may
    write to a mode-0555 folder, so ``os.access`` is made to say what it says to other users."""
    import recbole_robust_cli as cli

    read_only = tmp_path / "ro"
    read_only.mkdir()
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: False if os.path.abspath(p) == str(read_only)
                        else real_access(p, mode))
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(read_only if folder == "working folder" else work)
    args = ["--model=BPR", "--dataset=filmtrust", f"--data_path={small_data}", f"--build_dir={tmp_path / 'built'}",
            f"--checkpoint_dir={tmp_path / 'saved'}", *QUIET]
    if folder == "checkpoint_dir":
        args.append(f"--checkpoint_dir={read_only / 'saved'}")
        args.remove(f"--checkpoint_dir={tmp_path / 'saved'}")
    if folder == "build_dir":
        args.append(f"--build_dir={read_only / 'built'}")
        args.remove(f"--build_dir={tmp_path / 'built'}")
    if folder == "--resume folder":
        resume = read_only / "BPR-x.last.pth"
        torch.save({"config": {"model": "BPR"}, "state_dict": {}}, resume)
        torch.save({"config": {"model": "BPR"}, "state_dict": {}}, read_only / "BPR-x.pth")
        args.append(f"--resume={resume}")
    before = sorted(str(p) for p in tmp_path.rglob("*"))
    assert cli.main(args) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and error[0].startswith("error: ") and "cannot be written to" in error[0], error
    assert sorted(str(p) for p in tmp_path.rglob("*")) == before
