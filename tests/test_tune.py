"""Ray Tune search: planted grid, ASHA, failing trials, resume, a two-node Ray cluster, bad spaces."""
import os
import socket
import subprocess
import sys
import time

import pytest
import yaml

from conftest import REPO, run_cli
from recbole_robust.errors import RecBoleRobustError
from recbole_robust.tune import read_search_space, tune

RAY = os.path.join(os.path.dirname(sys.executable), "ray")


@pytest.fixture
def search(fast, tmp_path):
    """Quiet tiny trials on ml-100k."""
    return {"config_dict": {**fast, "epochs": 2}, "local_dir": str(tmp_path / "ray"), "verbose": 0}


def space(tmp_path, text):
    path = tmp_path / "space.yaml"
    path.write_text(text)
    return str(path)


def test_planted_grid_finds_the_known_best(tmp_path, search):
    rows, best, path = tune("BPR", "ml-100k", space(tmp_path, "learning_rate: {grid: [1.0e-7, 0.01]}\n"),
                            cpus_per_trial=1, **search)
    assert len(rows) == 2 and all(r["status"] == "completed" for r in rows)
    assert best["learning_rate"] == 0.01  # a learning rate of 1e-7 cannot learn in 2 epochs
    assert "test_recall@10" in best
    assert yaml.safe_load(open(os.path.join(path, "best_config.yaml"))) == {"learning_rate": 0.01}
    assert os.path.isfile(os.path.join(path, "results.csv")) and os.path.isfile(os.path.join(path, "results.md"))


def test_asha_stops_a_bad_trial_early(tmp_path, search):
    search["config_dict"]["epochs"] = 6
    rows, _, _ = tune("BPR", "ml-100k", space(tmp_path, "learning_rate: {grid: [1.0e-7, 1.0e-6, 0.003, 0.01]}\n"),
                      scheduler="asha", concurrent_trials=1, **search)
    statuses = [r["status"] for r in rows]
    assert "stopped early" in statuses and "completed" in statuses
    assert min(r["epochs_reported"] for r in rows) < 6


def test_failing_trial_is_retried_and_reported(tmp_path, search):
    rows, best, _ = tune("AMR", "ml-100k", space(tmp_path, "adv_eps: {grid: [0.1, -1.0]}\n"), max_failures=1,
                         **{**search, "config_dict": {**search["config_dict"], "adv_start_epoch": 0}})
    by_eps = {r["adv_eps"]: r for r in rows}
    assert by_eps[-1.0]["status"] == "error" and "adv_eps must be >= 0" in by_eps[-1.0]["error"]
    assert by_eps[0.1]["status"] == "completed" and best["adv_eps"] == 0.1


def test_bad_search_spaces(tmp_path, search):
    with pytest.raises(RecBoleRobustError, match="must be one of"):
        read_search_space(space(tmp_path, "learning_rate: {normal: [0, 1]}\n"))
    with pytest.raises(RecBoleRobustError, match="needs \\[low, high\\]"):
        read_search_space(space(tmp_path, "learning_rate: {uniform: [0]}\n"))
    with pytest.raises(RecBoleRobustError, match="unknown parameters of BPR: not_a_parameter"):
        tune("BPR", "ml-100k", space(tmp_path, "not_a_parameter: {choice: [1]}\n"), **search)
    assert set(read_search_space("AMR")) == {"adv_eps", "adv_lambda"}  # a shipped space by model name


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_interrupted_search_resumes(tmp_path, shared, build_dir):
    """Kill the driver after the first trial finishes; --resume completes the search."""
    spec = space(tmp_path, "learning_rate: {grid: [0.001, 0.003, 0.01]}\n")
    args = ["--model=BPR", "--dataset=ml-100k", f"--tune={spec}", "--concurrent_trials=1", "--epochs=2",
            f"--data_path={shared}", f"--build_dir={build_dir}", "--ray_dir=ray", "--show_progress=False"]
    driver = subprocess.Popen([sys.executable, str(REPO / "run_recbole_robust.py"), *args], cwd=tmp_path,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 240
    search_dir = None
    while time.time() < deadline and driver.poll() is None:
        runs = list((tmp_path / "ray").glob("*/*/result.json")) if (tmp_path / "ray").exists() else []
        if any('"done_training": true' in r.read_text() for r in runs):
            search_dir = runs[0].parents[1]
            break
        time.sleep(1)
    os.killpg(driver.pid, 9)
    driver.wait()
    subprocess.run([RAY, "stop", "--force"], capture_output=True)
    assert search_dir is not None, "the first trial did not finish in time"
    proc = run_cli([*args, f"--resume={search_dir}"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = list(open(search_dir / "results.csv"))[1:]
    assert len(rows) == 3 and all(",completed" in r for r in rows)


def test_search_on_a_two_node_ray_cluster(tmp_path, search):
    port = _free_port()
    env = dict(os.environ, RAY_USAGE_STATS_ENABLED="0")
    head = subprocess.run([RAY, "start", "--head", f"--port={port}", "--num-cpus=1", "--include-dashboard=false",
                           "--disable-usage-stats"], capture_output=True, text=True, env=env)
    assert head.returncode == 0, head.stderr
    try:
        worker = subprocess.run([RAY, "start", f"--address=127.0.0.1:{port}", "--num-cpus=1",
                                 "--resources={\"second_node\": 1}"], capture_output=True, text=True, env=env)
        assert worker.returncode == 0, worker.stderr
        import ray

        ray.init(address=f"127.0.0.1:{port}")
        try:
            assert len([n for n in ray.nodes() if n["Alive"]]) == 2
        finally:
            ray.shutdown()
        rows, best, _ = tune("BPR", "ml-100k", space(tmp_path, "learning_rate: {grid: [0.003, 0.01]}\n"),
                             address=f"127.0.0.1:{port}", **search)
        assert len(rows) == 2 and all(r["status"] == "completed" for r in rows)
    finally:
        subprocess.run([RAY, "stop", "--force"], capture_output=True, env=env)
