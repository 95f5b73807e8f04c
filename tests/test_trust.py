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

from conftest import write_small_datasets
from recbole_robust import cli, run_recbole_robust
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


# the data-loss cases: a build folder equal to, inside or over the data folder
@pytest.mark.parametrize("model, dataset, build", [
    ("BPR", "filmtrust", "{D}"),            # deleted D/filmtrust/ratings.txt and renamed the build into its place
    ("VBPR", "tiktok", "{D}"),              # deleted image_feat.npy and audio_feat.npy before refusing
    ("BPR", "ml-100k", "{D}"),              # deleted ml-100k.kg and ml-100k.link
    ("BPR", "filmtrust", "{D}/filmtrust"),  # a build inside the source folder
    ("BPR", "filmtrust", "{D}/built"),      # a build folder inside the data root
])
def test_a_build_folder_over_the_data_is_refused_and_the_data_left_as_it_was(model, dataset, build, data, tmp_path,
                                                                             capsys):
    if dataset == "ml-100k":
        recbole_ml100k(data / "ml-100k")
    before = snapshot(tmp_path)
    code, err = run([f"--model={model}", f"--dataset={dataset}", f"--data_path={data}",
                     f"--build_dir={build.format(D=data)}"], tmp_path, capsys)
    assert code == 2 and len(err) == 1 and "overlaps the data folder" in err[0], err
    assert snapshot(tmp_path) == before


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
    (["--model=APR"], "adv_eps: .nan", "adv_eps must be finite numbers >= 0, got nan"),
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
