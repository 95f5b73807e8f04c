"""Ray Tune on real Ray processes: an interrupted search resumes; a two-node cluster runs a search.

These tests start and stop Ray with the ``ray`` command (``ray stop --force`` ends every Ray process
of this machine), so they live apart from the searches that share one in-process Ray instance.
"""
import os
import socket
import subprocess
import sys
import time

import pytest

from conftest import REPO, run_cli
from recbole_robust.tune import tune

RAY = os.path.join(os.path.dirname(sys.executable), "ray")
pytestmark = pytest.mark.xdist_group("ray")  # one test process runs every test that starts Ray, one at a time


def space(tmp_path, text):
    path = tmp_path / "space.yaml"
    path.write_text(text)
    return str(path)


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_interrupted_search_resumes(tmp_path, small_data, build_dir):
    """Kill the driver after the first trial finishes; --resume completes the search."""
    # a cluster another test left (``ray start``) would be joined by the driver and stopped under it
    subprocess.run([RAY, "stop", "--force"], capture_output=True)
    spec = space(tmp_path, "learning_rate: {grid: [0.001, 0.003, 0.01]}\n")
    args = ["--model=BPR", "--dataset=ml-100k", f"--tune={spec}", "--concurrent_trials=1", "--epochs=2",
            f"--data_path={small_data}", f"--build_dir={build_dir}", "--ray_dir=ray", "--show_progress=False"]
    driver = subprocess.Popen([sys.executable, str(REPO / "run_recbole_robust.py"), *args], cwd=tmp_path,
                              stdout=open(tmp_path / "driver.log", "w"), stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.time() + 240
    search_dir = None
    while time.time() < deadline and driver.poll() is None:
        runs = list((tmp_path / "ray").glob("*/*/result.json")) if (tmp_path / "ray").exists() else []
        if any('"done_training": true' in r.read_text() for r in runs):
            search_dir = runs[0].parents[1]
            break
        time.sleep(1)
    assert driver.poll() is None, (tmp_path / "driver.log").read_text()[-3000:]  # still searching when killed
    os.killpg(driver.pid, 9)
    driver.wait()
    subprocess.run([RAY, "stop", "--force"], capture_output=True)
    assert search_dir is not None, "the first trial did not finish in time"
    proc = run_cli([*args, f"--resume={search_dir}"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = list(open(search_dir / "results.csv"))[1:]
    assert len(rows) == 3 and all(",completed" in r for r in rows)


def test_search_on_a_two_node_ray_cluster(tmp_path, fast):
    search = {"config_dict": {**fast, "epochs": 2}, "local_dir": str(tmp_path / "ray"), "verbose": 0}
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
        # the model-based searcher (HyperOpt's TPE) on the cluster
        rows, best, _ = tune("BPR", "ml-100k", space(tmp_path, "learning_rate: {loguniform: [0.001, 0.02]}\n"),
                             address=f"127.0.0.1:{port}", search_alg="hyperopt", num_samples=2, **search)
        assert len(rows) == 2 and all(r["status"] == "completed" for r in rows)
        assert all(0.001 <= r["learning_rate"] <= 0.02 for r in rows)
    finally:
        subprocess.run([RAY, "stop", "--force"], capture_output=True, env=env)
