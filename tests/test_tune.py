"""Ray Tune search in one local Ray instance: planted grid, ASHA, failing trials, bad spaces."""
import os

import pytest
import yaml

from recbole_robust.errors import RecBoleRobustError
from recbole_robust.tune import read_search_space, tune


pytestmark = pytest.mark.xdist_group("ray")  # one test process runs every test that starts Ray, one at a time


@pytest.fixture(scope="module")
def local_ray():
    """One local Ray instance for the searches of this module (tune() leaves a running Ray alone)."""
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture
def search(fast, tmp_path):
    """Quiet tiny trials on ml-100k."""
    return {"config_dict": {**fast, "epochs": 2}, "local_dir": str(tmp_path / "ray"), "verbose": 0}


def space(tmp_path, text):
    path = tmp_path / "space.yaml"
    path.write_text(text)
    return str(path)


def test_planted_grid_finds_the_known_best(tmp_path, search, local_ray):
    rows, best, path = tune("BPR", "ml-100k", space(tmp_path, "learning_rate: {grid: [1.0e-7, 0.01]}\n"),
                            cpus_per_trial=1, **search)
    assert len(rows) == 2 and all(r["status"] == "completed" for r in rows)
    assert best["learning_rate"] == 0.01  # a learning rate of 1e-7 cannot learn in 2 epochs
    assert "test_recall@10" in best
    assert yaml.safe_load(open(os.path.join(path, "best_config.yaml"))) == {"learning_rate": 0.01}
    assert os.path.isfile(os.path.join(path, "results.csv")) and os.path.isfile(os.path.join(path, "results.md"))
    import csv

    metric = next(k for k in rows[0] if k.startswith("best_"))  # each trial's best report (Ray's get_dataframe)
    assert best[metric] == max(r[metric] for r in rows) and all(r[metric] is not None for r in rows)
    written = list(csv.DictReader(open(os.path.join(path, "results.csv"), encoding="utf-8")))
    assert [float(r[metric]) for r in written] == [r[metric] for r in rows]


def test_asha_stops_a_bad_trial_early(tmp_path, search, local_ray):
    search["config_dict"]["epochs"] = 4
    # good trials first, so that the bad ones meet a full rung (ASHA stops the lower half)
    rows, _, _ = tune("BPR", "ml-100k", space(tmp_path, "learning_rate: {grid: [0.01, 0.003, 1.0e-6, 1.0e-7]}\n"),
                      scheduler="asha", concurrent_trials=1, **search)
    statuses = [r["status"] for r in rows]
    assert "stopped early" in statuses and "completed" in statuses
    assert min(r["epochs_reported"] for r in rows) < 4


def test_failing_trial_is_retried_and_reported(tmp_path, search, local_ray):
    # a value every setting check before the search lets through, refused by the trial's model: AMR has no "nope"
    rows, best, _ = tune("AMR", "ml-100k", space(tmp_path, "adv_targets: {grid: [[item_features], [nope]]}\n"),
                         max_failures=1, **{**search, "config_dict": {**search["config_dict"], "adv_start_epoch": 0}})
    by_target = {str(r["adv_targets"]): r for r in rows}
    assert by_target["['nope']"]["status"] == "error" and "cannot be perturbed at 'nope'" in by_target["['nope']"]["error"]
    assert by_target["['item_features']"]["status"] == "completed" and best["adv_targets"] == ["item_features"]


def test_bad_search_spaces(tmp_path, search, local_ray):
    with pytest.raises(RecBoleRobustError, match="must be one of"):
        read_search_space(space(tmp_path, "learning_rate: {normal: [0, 1]}\n"))
    with pytest.raises(RecBoleRobustError, match="needs \\[low, high\\]"):
        read_search_space(space(tmp_path, "learning_rate: {uniform: [0]}\n"))
    with pytest.raises(RecBoleRobustError, match="unknown parameters of BPR: not_a_parameter"):
        tune("BPR", "ml-100k", space(tmp_path, "not_a_parameter: {choice: [1]}\n"), **search)
    assert set(read_search_space("AMR")) == {"adv_eps", "adv_lambda"}  # a shipped space by model name
