"""Trust: no run deletes or rewrites the user's data, no value is run as code, no input exhausts the
machine, and a refused run leaves nothing on disk -- builds and their locks included.

Each case runs the command line in-process in an empty folder that holds its data and its build
folder too, so "nothing written" covers builds (``test_cli.py`` shares one build cache).
"""
import hashlib
import os
import re
import shutil
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import run_cli, write_small_datasets
import recbole_robust_cli as cli
from recbole_robust import run_recbole_robust
from recbole_robust.config import RECBOLE_EVALUATED, check_settings, parse_value
from recbole_robust.data import prepare
from recbole_robust.errors import RecBoleRobustError

QUIET = ["--show_progress=False", "--epochs=1"]


def snapshot(root):
    """Every path under ``root`` with the sha256 of each file."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
            for p in sorted(root.rglob("*"))}


def run(args, root, capsys):
    """``cli.main(args)`` in ``root``; returns (exit code, stderr lines)."""
    cwd = os.getcwd()
    os.chdir(root)
    try:
        code = cli.main([*args, *[q for q in QUIET if not any(a.startswith(q.split("=")[0]) for a in args)]])
    finally:
        os.chdir(cwd)
    return code, capsys.readouterr().err.strip().splitlines()


def recbole_ml100k(folder):
    """A copy of the recbole wheel's ml-100k with the extra files a RecBole user's copy has."""
    import recbole

    folder.mkdir(parents=True)
    source = Path(recbole.__file__).parent / "dataset_example" / "ml-100k"
    for f in source.iterdir():
        shutil.copy(f, folder)
    (folder / "ml-100k.kg").write_text("head_id:token\trelation_id:token\ttail_id:token\n1\tr\t2\n")
    (folder / "ml-100k.link").write_text("item_id:token\tentity_id:token\n1\t1\n")


@pytest.fixture
def data(tmp_path):
    """A data root D with the small tiktok / filmtrust / ciaodvd / amazon datasets."""
    return write_small_datasets(tmp_path / "D")


def build_over(model, dataset, build):
    def make(data):
        if dataset == "ml-100k":
            recbole_ml100k(data / "ml-100k")
        return [f"--model={model}", f"--dataset={dataset}", f"--build_dir={build.format(D=data)}"]
    return make


# the data-loss cases: a build folder equal to, inside or over the data folder (``--data_path=D``)
DATA_LOSS = {
    # deleted D/filmtrust/ratings.txt and renamed the build into its place
    "filmtrust, --build_dir=D": (build_over("BPR", "filmtrust", "{D}"), "overlaps the data folder"),
    # deleted image_feat.npy and audio_feat.npy before refusing
    "tiktok (VBPR), --build_dir=D": (build_over("VBPR", "tiktok", "{D}"), "overlaps the data folder"),
    # deleted ml-100k.kg and ml-100k.link of a RecBole user's copy
    "ml-100k copy, --build_dir=D": (build_over("BPR", "ml-100k", "{D}"), "overlaps the data folder"),
    "filmtrust, --build_dir=D/filmtrust": (build_over("BPR", "filmtrust", "{D}/filmtrust"), "overlaps the data folder"),
    "filmtrust, --build_dir=D/filmtrust/b": (build_over("BPR", "filmtrust", "{D}/filmtrust/b"),
                                             "overlaps the data folder"),
}


@pytest.mark.parametrize("case", list(DATA_LOSS))
def test_a_build_folder_over_the_data_is_refused_and_the_data_left_as_it_was(case, data, tmp_path, capsys):
    make_args, message = DATA_LOSS[case]
    args = make_args(data)
    before = snapshot(tmp_path)
    code, err = run([*args, f"--data_path={data}"], tmp_path, capsys)
    assert code == 2 and len(err) == 1 and message in err[0], err
    assert snapshot(tmp_path) == before


def test_a_build_folder_beside_the_dataset_folders_leaves_them_as_they_were(data, tmp_path):
    before = snapshot(data)
    result = run_recbole_robust("BPR", "filmtrust", config_dict={
        "data_path": str(data), "build_dir": str(data / "built"), "epochs": 1, "show_progress": False,
        "state": "WARNING", "checkpoint_dir": str(tmp_path / "saved")})
    assert result["test_result"]
    assert {k: v for k, v in snapshot(data).items() if not k.startswith("built")} == before
    assert prepare.is_own_folder(data / "built" / "filmtrust")


def test_a_folder_the_builder_did_not_write_is_never_replaced(data, tmp_path, capsys):
    """A build folder that exists without the builder's marker (here: a copy of the user's data) stays."""
    build_dir = tmp_path / "built"
    shutil.copytree(data / "filmtrust", build_dir / "filmtrust")
    before = snapshot(tmp_path)
    code, err = run(["--model=BPR", "--dataset=filmtrust", f"--data_path={data}", f"--build_dir={build_dir}"],
                    tmp_path, capsys)
    assert code == 2 and len(err) == 1 and "was not written by recbole-robust" in err[0], err
    assert snapshot(tmp_path) == before


def test_only_the_builders_own_temporaries_and_builds_are_removed(data, tmp_path):
    """A killed build's temporary (marked) is removed by the next build; a look-alike folder is not;
    a stale build of the builder's own is replaced."""
    build_dir = tmp_path / "built"
    theirs = build_dir / ".filmtrust-build-mine"
    theirs.mkdir(parents=True)
    (theirs / "notes.txt").write_text("the user's")
    ours = build_dir / ".filmtrust-build-killed"
    ours.mkdir()
    (ours / prepare.BUILD_MARKER).touch()
    conf = prepare.dataset_config("filmtrust")["build"]
    source = prepare.find_source("filmtrust", conf, [str(data)])
    target, info = prepare.build_dataset("filmtrust", conf, *source, str(build_dir))
    assert not ours.exists() and (theirs / "notes.txt").read_text() == "the user's"
    assert prepare.is_own_folder(target) and info["counts"]["inter"] > 0
    (data / "filmtrust" / "ratings.txt").write_text("1 1 1\n1 2 2\n2 1 3\n")  # a changed source: rebuilt
    _, info = prepare.build_dataset("filmtrust", conf, *prepare.find_source("filmtrust", conf, [str(data)]),
                                    str(build_dir))
    assert info["counts"]["inter"] == 3


def ratings(text):
    def make(data):
        (data / "filmtrust" / "ratings.txt").write_bytes(text)
        return ["--model=BPR", "--dataset=filmtrust"]
    return make


# refused after the build (AMR without features, promotion on a model without content scores), or by
# the builder itself (a bad ratings file): no build, no lock, no build folder stays
REFUSED_AFTER_BUILDING = {
    "AMR without feature files": (lambda data: ["--model=AMR", "--dataset=amazon"], "image_feat.npy, text_feat.npy"),
    "promotion on FREEDOM": (lambda data: ["--model=FREEDOM", "--dataset=ml-100k", "--analysis=promotion"],
                             "scores do not depend on its item content features"),
    "promotion_items above the training items": (
        lambda data: ["--model=VBPR", "--dataset=tiktok", "--analysis=promotion", "--promotion_items=100000"],
        "promotion_items must be in [1, 200]"),
    "topk above the items": (lambda data: ["--model=BPR", "--dataset=tiktok", "--topk=[10,5000]"],
                             "topk 5000 is larger than the 200 items"),
    "ratings with a comment line": (ratings(b"# user item rating\n1 1 2\n"), "could not build dataset 'filmtrust'"),
    "ratings that are not numbers": (ratings(b"1 1 abc\n2 2 3\n"), "could not convert string to float: 'abc'"),
    "ratings that are not UTF-8": (ratings(b"1 1 2\n\xff\xfe 2 3\n"), "could not build dataset 'filmtrust'"),
}


@pytest.mark.parametrize("case", list(REFUSED_AFTER_BUILDING))
def test_a_run_refused_after_building_leaves_no_build(case, data, tmp_path, capsys):
    make_args, message = REFUSED_AFTER_BUILDING[case]
    args = make_args(data)
    before = snapshot(tmp_path)
    code, err = run([*args, f"--data_path={data}", f"--build_dir={tmp_path / 'saved' / 'datasets'}"], tmp_path, capsys)
    assert code == 2 and len(err) == 1 and message in err[0], err
    assert snapshot(tmp_path) == before  # no saved/, no saved/datasets/<name>, no .<name>.lock


def test_a_good_build_stays_when_a_later_run_is_refused(data, tmp_path, capsys):
    """Only what the refused run created is undone: an earlier run's build is kept."""
    build = f"--build_dir={tmp_path / 'built'}"
    result = run_recbole_robust("BPR", "tiktok", config_dict={"data_path": str(data), "build_dir": str(tmp_path / "built"),
                                                              "epochs": 1, "show_progress": False, "state": "WARNING",
                                                              "checkpoint_dir": str(tmp_path / "saved")})
    assert result["test_result"]
    before = snapshot(tmp_path / "built")
    code, err = run(["--model=BPR", "--dataset=tiktok", f"--data_path={data}", build, "--topk=[10,5000]"],
                    tmp_path, capsys)
    assert code == 2 and "topk 5000" in err[0]
    assert snapshot(tmp_path / "built") == before


# code execution: RecBole 1.2.1 evaluates config values in three places
CODE = "__import__('os').system('touch pwned')"


def test_recbole_kd_dagfm_teacher_is_never_evaluated(tmp_path, capsys):
    (tmp_path / "c.yaml").write_text(f'teacher: "{CODE}"\n')
    (tmp_path / "s.yaml").write_text(f'teacher: {{grid: [CrossNet, "{CODE}"]}}\n')
    for args in (["--model=KD_DAGFM", "--dataset=ml-100k", f"--teacher={CODE}"],
                 ["--model=KD_DAGFM", "--dataset=ml-100k", "--config_files=c.yaml"],
                 ["--model=KD_DAGFM", "--dataset=ml-100k", "--tune=s.yaml"]):
        code, err = run(args, tmp_path, capsys)
        assert code == 2 and len(err) == 1 and "teacher must be one of CrossNet, CINComp" in err[0], err
    with pytest.raises(RecBoleRobustError, match="teacher must be one of"):
        run_recbole_robust("KD_DAGFM", "ml-100k", config_dict={"teacher": CODE})
    assert not (tmp_path / "pwned").exists()
    check_settings({"teacher": "CINComp"})  # the names RecBole means are accepted


def test_every_eval_in_recbole_is_accounted_for():
    """RecBole's source: each file that calls eval() on a value is listed in RECBOLE_EVALUATED (with
    what makes the plugin safe from it); a RecBole that adds one fails here."""
    import recbole

    root = Path(recbole.__file__).parent
    calls = re.compile(r"(?<![\w.])eval\s*\(")
    found = {str(p.relative_to(root.parent)) for p in root.rglob("*.py") if calls.search(p.read_text(encoding="utf-8"))}
    assert found == set(RECBOLE_EVALUATED)
    package = Path(__file__).resolve().parents[1] / "recbole_robust"
    uses = re.compile(r"hyper_tuning import|import .*hyper_tuning|HyperTuning\(")
    assert not any(uses.search(p.read_text(encoding="utf-8")) for p in package.rglob("*.py"))  # it evaluates its space


# resource bombs: one line, fast, nothing written
ALIAS_BOMB = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{c}: &{c} [{', '.join(['*' + p] * 9)}]\n" for p, c in zip("abcdefgh", "bcdefghi"))


@pytest.mark.parametrize("name, text, message", [
    ("bomb.yaml", ALIAS_BOMB, "more than 20 YAML aliases"),
    ("big.yaml", "x: " + "y" * (2 << 20) + "\n", "settings files are limited to 1048576 bytes"),
    ("deep.yaml", "topk: " + "[" * 20000 + "]" * 20000 + "\n", "nested more than 50 deep"),
])
def test_yaml_bombs_are_refused_at_once(name, text, message, tmp_path, capsys):
    (tmp_path / name).write_text(text)
    before = snapshot(tmp_path)
    start = time.monotonic()
    for option in ("--config_files", "--tune"):
        code, err = run(["--model=BPR", "--dataset=ml-100k", f"{option}={name}"], tmp_path, capsys)
        assert code == 2 and len(err) == 1 and message in err[0] and name in err[0], err
    assert time.monotonic() - start < 60  # a bound far above the real time (well under a second), not a benchmark
    assert snapshot(tmp_path) == before


def test_deeply_nested_values_are_refused(tmp_path, capsys):
    code, err = run(["--model=BPR", "--dataset=ml-100k", "--topk=" + "[" * 20000 + "]" * 20000], tmp_path, capsys)
    assert code == 2 and len(err) == 1 and "--topk: a value nests lists or mappings more than 50 deep" in err[0], err
    deep = []
    for _ in range(20000):
        deep = [deep]
    with pytest.raises(RecBoleRobustError, match="topk holds lists or mappings nested more than 50 deep"):
        run_recbole_robust("BPR", "ml-100k", config_dict={"topk": deep})
    with pytest.raises(RecBoleRobustError, match="longer than the 100000 allowed"):
        parse_value("1" * 100_001)
    assert parse_value("[[1, 2], {'a': [3]}]") == [[1, 2], {"a": [3]}]


@pytest.mark.parametrize("args, yaml, message", [
    ([], "learning_rate: .inf", "c.yaml: learning_rate must be a number > 0, got inf"),
    ([], "weight_decay: .nan", "c.yaml: weight_decay must be a number >= 0, got nan"),
    (["--model=APR"], "adv_eps: .nan", "adv_eps must be >= 0 and finite: a number, or a list with one per term, got nan"),
    (["--learning_rate=1e999"], None, "learning_rate must be a number > 0, got inf"),
    (["--preset=../overall"], None, "a preset is a name, not a path"),
])
def test_values_out_of_range_are_refused(args, yaml, message, tmp_path, capsys):
    model = [] if any(a.startswith("--model") for a in args) else ["--model=BPR"]
    if yaml:
        (tmp_path / "c.yaml").write_text(yaml + "\n")
        args = [*args, "--config_files=c.yaml"]
    before = snapshot(tmp_path)
    code, err = run([*model, "--dataset=ml-100k", *args], tmp_path, capsys)
    assert code == 2 and len(err) == 1 and message in err[0], err
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("kwargs, message", [
    ({"model": 123}, "model must be a name (a string), got 123"),
    ({"config_dict": [("epochs", 1)]}, "config_dict must be a dict of settings, got a list"),
    ({"config_file_list": "c.yaml"}, "config_file_list must be a list of file names, got 'c.yaml'"),
    ({"preset": "../overall"}, "a preset is a name, not a path"),
])
def test_the_python_api_refuses_wrong_types_with_its_error(kwargs, message, workdir):
    with pytest.raises(RecBoleRobustError, match=re.escape(message)):
        run_recbole_robust(**{"model": "BPR", "dataset": "ml-100k", **kwargs})
    assert snapshot(workdir) == {}


# RecBole's own validation, atomic files, feature files: one line, exit 2, nothing written
def toy(root, inter=None, features=None):
    """An atomic dataset 'toy' (20 users x 10 items, 5 each) under ``root/data``; VBPR reads ``img.npy``."""
    folder = root / "data" / "toy"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    rows = ["user_id:token\titem_id:token"] + [f"{u}\t{i}" for u in range(20) for i in rng.choice(10, 5, replace=False)]
    (folder / "toy.inter").write_bytes(inter if inter is not None else ("\n".join(rows) + "\n").encode())
    if features is not None:
        (folder / "img.npy").write_bytes(features)
        (root / "toy.yaml").write_text("feature_files: {image: img.npy}\n")
        return ["--model=VBPR", "--dataset=toy", f"--data_path={root / 'data'}", "--config_files=toy.yaml"]
    return ["--model=BPR", "--dataset=toy", f"--data_path={root / 'data'}"]


def npy(matrix, claimed_shape=None):
    """``.npy`` bytes of ``matrix``; with ``claimed_shape``, a header that claims that shape instead."""
    import io

    buffer = io.BytesIO()
    if claimed_shape is None:
        np.save(buffer, matrix)
    else:
        np.lib.format.write_array_header_1_0(buffer, {"descr": "<f8", "fortran_order": False, "shape": claimed_shape})
        buffer.write(matrix.astype("<f8").tobytes())
    return buffer.getvalue()


def every_item_for_one_user():
    return ("user_id:token\titem_id:token\n" + "".join(f"0\t{i}\n" for i in range(10))
            + "".join(f"{u}\t{i}\n" for u in range(1, 20) for i in range(3))).encode()


REFUSED = {
    "unknown evaluation mode": (lambda r: [*toy(r), "--eval_args={'mode': 'bogus'}"], "eval_args must be a mapping"),
    "RS split without 3 parts": (lambda r: [*toy(r), "--eval_args={'split': {'RS': [0.8, 0.2]}}"], "eval_args must be"),
    "unknown order": (lambda r: [*toy(r), "--eval_args={'order': 'XX'}"], "eval_args must be"),
    "negative sampling distribution": (
        lambda r: [*toy(r), "--train_neg_sample_args={'distribution': 'bogus', 'sample_num': 1}"],
        "train_neg_sample_args must be"),
    "sample_num -1": (lambda r: [*toy(r), "--train_neg_sample_args={'distribution': 'uniform', 'sample_num': -1}"],
                      "sample_num an integer >= 1"),
    "ranking and value metrics": (lambda r: [*toy(r), "--metrics=['Recall','MAE']"],
                                  "RecBole refused the settings or data: Ranking metrics and value metrics"),
    "AUC under full ranking": (lambda r: [*toy(r), "--metrics=['AUC']"], "Full sort evaluation do not match"),
    "state": (lambda r: [*toy(r), "--state=bogus"], "state must be a log level"),
    "a filter that removes every user": (lambda r: [*toy(r), "--user_inter_num_interval=[100,inf)"],
                                         "RecBole refused the settings or data: Some feat is empty"),
    "load_col without the item field": (lambda r: [*toy(r), "--load_col={'inter': ['user_id']}"],
                                        "no field or setting 'item_id'"),
    "USER_ID_FIELD not a column": (lambda r: [*toy(r), "--USER_ID_FIELD=nope"], "no field or setting 'nope'"),
    "a user who has every item": (lambda r: toy(r, every_item_for_one_user()), "Some users have interacted with all"),
    "embedding_size that cannot be allocated": (lambda r: [*toy(r), "--embedding_size=100000000000"],
                                                "not enough memory for this model and data"),
    ".inter: unknown type": (lambda r: toy(r, b"user_id:token\titem_id:bogus\n1\t2\n"), "item_id has type 'bogus'"),
    ".inter: header without types": (lambda r: toy(r, b"user_id\titem_id\n1\t2\n"), "'user_id' has no type"),
    ".inter: duplicate column": (lambda r: toy(r, b"user_id:token\tuser_id:token\n1\t2\n"), "appears twice"),
    ".inter: more fields than the header": (lambda r: toy(r, b"user_id:token\titem_id:token\n1\t2\t3\n"),
                                            "line 2 has 3 fields, the header 2"),
    ".inter: not UTF-8": (lambda r: toy(r, b"user_id:token\titem_id:token\n1\t\xff\xfe\n"), "is not utf-8 text"),
    ".npy header claiming 37 TiB": (lambda r: toy(r, features=npy(np.ones((10, 4)), (10_000_000_000, 512))),
                                    "(40960000000000 bytes), the file holds 320 bytes of data"),
    "zero-width feature matrix": (lambda r: toy(r, features=npy(np.ones((10, 0)))), "no feature columns"),
}


@pytest.mark.parametrize("case", list(REFUSED))
def test_recbole_and_file_problems_are_one_line(case, tmp_path, capsys):
    make_args, message = REFUSED[case]
    args = make_args(tmp_path)
    before = snapshot(tmp_path)
    code, err = run(args, tmp_path, capsys)
    assert code == 2 and len(err) == 1 and err[0].startswith("error: ") and message in err[0], err
    assert snapshot(tmp_path) == before


def test_plugin_data_problems_are_one_line(data, tmp_path, capsys):
    (data / "amazon" / "5-core" / "train.json").write_text("[[1, 2]]")
    inter = (data / "tiktok" / "tiktok.inter").read_text().splitlines()
    (data / "tiktok" / "tiktok.inter").write_text("\n".join(line for line in inter if not line.endswith("\t2")) + "\n")
    before = snapshot(tmp_path)
    for args, message in ((["--model=BPR", "--dataset=amazon"], "train.json must map each user to a list of items"),
                          (["--model=BPR", "--dataset=tiktok"], "no rows with x_label 2 (test)")):
        code, err = run([*args, f"--data_path={data}", f"--build_dir={tmp_path / 'built'}"], tmp_path, capsys)
        assert code == 2 and len(err) == 1 and message in err[0], err
    assert snapshot(tmp_path) == before


# searches: bounds, options and a cluster address are checked before Ray starts
@pytest.mark.parametrize("space, options, message", [
    ("learning_rate: {uniform: [0.1, 0.01]}", [], "needs low < high"),
    ("learning_rate: {loguniform: [0, 0.1]}", [], "needs low > 0"),
    ("learning_rate: {uniform: [0.001, .inf]}", [], "must be finite numbers"),
    ("embedding_size: {randint: [8, 16.5]}", [], "must be integers"),
    ("embedding_size: {randint: [-8, 16]}", [], "embedding_size must be an integer >= 1, got -8"),
    ("learning_rate: {uniform: [-1, 0.1]}", [], "learning_rate must be a number > 0, got -1"),
    ("learning_rate: {choice: [0.01]}", ["--time_budget_s=-1"], "--time_budget_s must be a number of seconds > 0"),
    ("learning_rate: {choice: [0.01]}", ["--concurrent_trials=0"], "--concurrent_trials must be an integer >= 1"),
    ("learning_rate: {choice: [0.01]}", ["--address=127.0.0.1:{port}"], "no Ray cluster answers there"),
    ("learning_rate: {choice: [0.01]}", ["--cpus_per_trial=512"], "more than the Ray cluster's"),
])
@pytest.mark.xdist_group("ray")
def test_search_options_are_checked_before_trials_start(space, options, message, tmp_path, capsys):
    import socket

    with socket.socket() as s:  # a port where nothing listens
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    (tmp_path / "s.yaml").write_text(space + "\n")
    before = snapshot(tmp_path)
    start = time.monotonic()
    args = ["--model=BPR", "--dataset=ml-100k", "--tune=s.yaml", f"--ray_dir={tmp_path / 'ray'}",
            *[o.format(port=port) for o in options]]
    if any(o.startswith("--cpus_per_trial") for o in options):  # starts Ray: in a process of its own
        proc = run_cli([*args, *QUIET], cwd=tmp_path)
        code, err = proc.returncode, [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
        assert "Traceback" not in proc.stderr
    else:
        code, err = run(args, tmp_path, capsys)
    assert code == 2 and len(err) == 1 and message in err[0], err
    assert time.monotonic() - start < 120  # Ray's own wait for a cluster is minutes; a generous bound
    assert snapshot(tmp_path) == before


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A BPR trained 2 epochs on the small tiktok: ``(data root, build dir, best .pth, .last.pth)``."""
    root = tmp_path_factory.mktemp("trained")
    data = write_small_datasets(root / "D")
    settings = {"data_path": str(data), "build_dir": str(root / "built"), "checkpoint_dir": str(root / "saved"),
                "epochs": 2, "show_progress": False, "state": "WARNING"}
    cwd = os.getcwd()
    os.chdir(root)
    try:
        best = run_recbole_robust("BPR", "tiktok", config_dict=settings)["saved_model_file"]
    finally:
        os.chdir(cwd)
    return data, root / "built", best, best.replace(".pth", ".last.pth")


def tamper(src, dst, change):
    import torch

    state = torch.load(src, weights_only=True)
    change(state)
    torch.save(state, dst)
    return str(dst)


CHECKPOINTS = {
    "an extra state_dict key": ("checkpoint", lambda s: s["state_dict"].__setitem__("extra.weight", s["state_dict"][
        "user_embedding.weight"]), "holds tensors BPR does not have: extra.weight"),
    "an int-valued state_dict key": ("checkpoint", lambda s: s["state_dict"].__setitem__("user_embedding.weight", 3),
                                     "user_embedding.weight is a int, not a tensor"),
    ".last.pth without epoch": ("resume", lambda s: s.pop("epoch"), "'epoch' must be an integer >= 0, got None"),
    "malformed RNG state": ("resume", lambda s: s["rng"]["numpy"].__setitem__("keys", s["rng"]["torch"]),
                            "malformed random number generator state"),
    "empty optimiser groups": ("resume", lambda s: s["optimizer"].__setitem__("param_groups", []),
                               "the optimiser state is missing or malformed"),
}


@pytest.mark.parametrize("case", list(CHECKPOINTS))
def test_malformed_checkpoints_are_refused_before_training(case, trained, tmp_path, capsys):
    import torch

    data, built, best, last = trained
    option, change, message = CHECKPOINTS[case]
    (tmp_path / "run").mkdir()
    path = tamper(last, tmp_path / "run" / "BPR-x.last.pth", change)
    torch.save(torch.load(best, weights_only=True), tmp_path / "run" / "BPR-x.pth")
    before = snapshot(tmp_path)
    code, err = run(["--model=BPR", "--dataset=tiktok", f"--data_path={data}", f"--build_dir={built}",
                     f"--checkpoint_dir={tmp_path / 'saved'}", f"--{option}={path}"], tmp_path, capsys)
    assert code == 2 and len(err) == 1 and message in err[0], err
    assert snapshot(tmp_path) == before


def test_a_report_checks_every_checkpoint_before_evaluating_any(trained, tmp_path, capsys):
    data, built, best, last = trained
    other = tamper(best, tmp_path / "other.pth", lambda s: s["config"].__setitem__("dataset", "filmtrust"))
    wide = tamper(best, tmp_path / "wide.pth", lambda s: s["state_dict"].__setitem__(
        "item_embedding.weight", s["state_dict"]["item_embedding.weight"][:-1]))
    report = tmp_path / "report"
    for second, message in ((other, "was trained on dataset filmtrust, the report is of tiktok"),
                            (wide, "item_embedding.weight has shape")):
        code, err = run(["--dataset=tiktok", f"--data_path={data}", f"--build_dir={built}", f"--report_dir={report}",
                         "--robustness_report", f"A={best}", f"B={second}"], tmp_path, capsys)
        assert code == 2 and len(err) == 1 and message in err[0], err
        assert not report.exists() and not (tmp_path / "log").exists()


def test_report_labels_split_at_the_first_equals_sign():
    from recbole_robust.pipelines import parse_groups

    assert parse_groups(["A=dir/lr=0.1/x.pth,y.pth", "dir/lr=0.1/z.pth", "w.pth"]) == [
        ("A", ["dir/lr=0.1/x.pth", "y.pth"]), (None, ["dir/lr=0.1/z.pth"]), (None, ["w.pth"])]


@pytest.mark.parametrize("what", ["checkpoint_dir", "attack_dir", "report_dir", "log", "build_dir"])
def test_an_output_folder_that_is_a_file_is_refused_up_front(what, trained, tmp_path, capsys):
    data, built, best, last = trained
    (tmp_path / "afile").write_text("mine")
    args = ["--model=BPR", "--dataset=tiktok", f"--data_path={data}", f"--build_dir={built}",
            f"--checkpoint_dir={tmp_path / 'saved'}"]
    if what == "log":
        (tmp_path / "log").write_text("mine")
    elif what == "report_dir":
        args = [a for a in args if not a.startswith("--model")] + [
            "--report_dir=afile", "--robustness_report", f"A={best}"]
    elif what == "attack_dir":
        args += ["--attack=fgm", "--attack_targets=[item_embedding.weight]", "--attack_dir=afile/x"]
    else:
        args = [a for a in args if not a.startswith(f"--{what}=")] + [f"--{what}=afile"]
    before = snapshot(tmp_path)
    code, err = run(args, tmp_path, capsys)
    assert code == 2 and len(err) == 1 and "is a file, not a folder" in err[0], err
    assert snapshot(tmp_path) == before


def test_ctrl_c_names_the_last_checkpoint_and_exits_130(trained, tmp_path, capsys, monkeypatch):
    """Ctrl-C during the second epoch: one line naming the .last.pth the run can resume from; the stale
    temporary a killed writer left beside it is removed by the next run in that folder."""
    from recbole_robust.trainer.trainer import RobustMixin

    data, built, best, last = trained
    saved = tmp_path / "saved"
    saved.mkdir()
    stale = saved / "BPR-old.pth.tmp999999999"  # a pid that no process has
    stale.write_bytes(b"half a checkpoint")
    original = RobustMixin._train_epoch

    def train_epoch(self, train_data, epoch_idx, *args, **kwargs):
        if epoch_idx == 1:
            raise KeyboardInterrupt
        return original(self, train_data, epoch_idx, *args, **kwargs)

    monkeypatch.setattr(RobustMixin, "_train_epoch", train_epoch)
    code, err = run(["--model=BPR", "--dataset=tiktok", f"--data_path={data}", f"--build_dir={built}",
                     f"--checkpoint_dir={saved}", "--epochs=3", "--state=WARNING"], tmp_path, capsys)
    assert code == 130 and len(err) == 1, err
    resume = re.search(r"--resume=(\S+\.last\.pth)\)", err[0]).group(1)
    assert err[0].startswith("error: interrupted; the last complete checkpoint is") and os.path.isfile(resume)
    assert not stale.exists()


def test_a_full_disk_is_one_line_and_keeps_the_previous_checkpoint(trained, tmp_path, capsys, monkeypatch):
    import torch

    data, built, best, last = trained

    def full_disk(obj, f, *args, **kwargs):
        raise RuntimeError("[enforce fail at inline_container.cc:603] . unexpected pos 1536 vs 1430")

    monkeypatch.setattr(torch, "save", full_disk)
    code, err = run(["--model=BPR", "--dataset=tiktok", f"--data_path={data}", f"--build_dir={built}",
                     f"--checkpoint_dir={tmp_path / 'saved'}", "--state=WARNING"], tmp_path, capsys)
    assert code == 1 and len(err) == 1 and "the disk is full" in err[0], err
    assert not list((tmp_path / "saved").glob("*.tmp*"))
