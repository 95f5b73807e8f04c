"""Several processes (--nproc, trainer/distributed.py) on the CPU with gloo: 2 processes with half of every batch
give the weights and metrics of 1 process; only rank 0 writes; evaluation counts every user once; resume works;
what cannot run in several processes is refused with one line before anything is written."""
import glob
import os

import pytest
import torch

from recbole_robust.errors import RecBoleRobustError
from recbole_robust.quick_start import run_recbole_robust, validate_run
from conftest import run_cli


def last_state(result):
    return torch.load(result["saved_model_file"].replace(".pth", ".last.pth"), weights_only=True)


def max_difference(a, b):
    return max(float((a[k].float() - b[k].float()).abs().max()) for k in a
               if a[k].layout == torch.strided and a[k].is_floating_point())


@pytest.mark.parametrize("model, dataset, settings", [
    ("BPR", "tiktok", {}),
    # the adversary's gradient is averaged over the ranks: both take the same perturbation
    ("VBPR", "tiktok", {"adv_targets": ["item_features"], "adv_eps": 0.5, "negatives_from": "train"}),
    ("LightGCN", "tiktok", {"mirror_gradient": True, "mg_interval": 1}),  # MG's second step is reduced too
    ("FREEDOM", "tiktok", {}),  # edge pruning at the epoch's start: rank 0's random state on every rank
    ("BPR", "tiktok", {"sharpness": "sam", "train_batch_size": 511}),  # SAM's first pass; an odd batch size
])
def test_two_processes_give_the_weights_and_metrics_of_one(fast, model, dataset, settings):
    config = {**fast, **settings, "epochs": 1, "threads": 1}
    one = run_recbole_robust(model, dataset, config_dict={**config, "nproc": 1})
    two = run_recbole_robust(model, dataset, config_dict={**config, "nproc": 2})
    assert max_difference(last_state(one)["state_dict"], last_state(two)["state_dict"]) < 1e-4  # float sums
    assert two["test_result"] == one["test_result"]
    assert two["best_valid_result"] == one["best_valid_result"]


def test_evaluation_counts_every_user_once(fast):
    """A checkpoint evaluated by 2 processes (each scoring half of 100 batches of 3 users, then gathered) gives the
    metrics of one process exactly."""
    trained = run_recbole_robust("BPR", "tiktok", config_dict={**fast, "epochs": 2})
    config = {**fast, "eval_memory_mb": 0.01, "metrics": ["Recall", "NDCG", "MRR", "Hit", "MAP",
                                                          "ShannonEntropy"]}
    one = run_recbole_robust("BPR", "tiktok", config_dict=config, checkpoint=trained["saved_model_file"])
    two = run_recbole_robust("BPR", "tiktok", config_dict={**config, "nproc": 2},
                             checkpoint=trained["saved_model_file"])
    assert two["test_result"] == one["test_result"]
    assert one["test_result"]["recall@10"] > 0


def test_rank_zero_alone_writes_and_resume_continues(fast, workdir):
    config = {**fast, "nproc": 2, "threads": 1, "state": "INFO"}
    uninterrupted = run_recbole_robust("BPR", "tiktok", config_dict={**config, "epochs": 4})
    assert len(glob.glob(str(workdir / "log" / "BPR" / "*.log"))) == 1
    assert len(os.listdir(workdir / "log_tensorboard")) == 1
    assert sorted(os.path.basename(p) for p in glob.glob(str(workdir / "saved" / "*.pth"))) == sorted(
        os.path.basename(uninterrupted["saved_model_file"]).replace(".pth", suffix) for suffix in (".pth", ".last.pth"))
    short = run_recbole_robust("BPR", "tiktok", config_dict={**config, "epochs": 2})
    resumed = run_recbole_robust("BPR", "tiktok", config_dict={**config, "epochs": 4},
                                 resume=short["saved_model_file"].replace(".pth", ".last.pth"))
    assert last_state(resumed)["epoch"] == 3
    assert max_difference(last_state(resumed)["state_dict"], last_state(uninterrupted)["state_dict"]) < 1e-6
    assert resumed["test_result"] == uninterrupted["test_result"]


def test_analyses_run_in_rank_zero_on_the_whole_data(fast):
    """Slices count every test user: rank 0 analyses the whole data after the group has ended."""
    result = run_recbole_robust("BPR", "tiktok", config_dict={**fast, "nproc": 2, "analysis": "slices",
                                                             "slice_groups": 3})["analyses"]["slices"]
    assert sum(r["count"] for r in result.records if r["slice"] == "users by activity") == 300


@pytest.mark.parametrize("model, settings, message", [
    ("VAEGAN", {}, "nproc > 1 needs RecBole's training loop, which GANTrainer replaces"),
    ("BPR", {"world_size": 1}, "world_size 1 is smaller than nproc 2"),
    ("BPR", {"world_size": 3, "group_offset": 2, "port": 29555}, "group_offset 2 + nproc 2 exceeds world_size 3"),
    ("BPR", {"world_size": 4}, "a group over several machines (world_size > nproc) needs ip and port"),
    ("BPR", {"backend": "nccl"}, "backend nccl needs GPUs"),
    ("BPR", {"learner": "sparse_adam"}, "learner sparse_adam cannot train in several processes"),
    ("BPR", {"valid_attack": "fgm"}, "valid_attack cannot run with nproc > 1"),
    ("BPR", {"nproc": 0}, "nproc must be an integer >= 1"),
    ("BPR", {"local_rank": 1}, "local_rank is set by the launcher"),
])
def test_what_cannot_run_in_several_processes_is_refused(fast, tmp_path, model, settings, message):
    build = tmp_path / "fresh"
    config = {**fast, "nproc": 2, **settings, "build_dir": str(build)}
    with pytest.raises(RecBoleRobustError) as error:
        validate_run(model, "tiktok", config_dict=config)
    assert message in str(error.value) and "\n" not in str(error.value)
    assert not build.exists()


def test_an_unpicklable_callback_is_refused(fast):
    with pytest.raises(RecBoleRobustError, match="callback_fn cannot be sent to the processes"):
        run_recbole_robust("BPR", "tiktok", config_dict={**fast, "nproc": 2}, callback_fn=lambda epoch, score: None)


def test_cli_trains_in_two_processes_and_refuses_bad_values(fast, workdir):
    common = [f"--data_path={fast['data_path']}", f"--build_dir={fast['build_dir']}", "--epochs=1",
              "--show_progress=False"]
    done = run_cli(["--model=BPR", "--dataset=tiktok", "--nproc=2", *common], workdir)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "test result" in done.stdout + done.stderr
    refused = run_cli(["--model=BPR", "--dataset=tiktok", "--nproc=2", "--backend=mpi", *common], workdir)
    assert refused.returncode == 2
    assert refused.stderr.strip().count("\n") == 0 and "backend" in refused.stderr


def test_a_group_over_two_launchers_as_over_two_machines(fast, tmp_path):
    """world_size 2 with nproc 1 on each of two "machines" (two launchers, group_offset 0 and 1, one address):
    they train together; the first machine's rank 0 writes the log and checkpoints, the second writes none."""
    import subprocess
    import sys

    from conftest import REPO
    from recbole_robust.trainer.distributed import free_port

    port = free_port()
    common = ["--model=BPR", "--dataset=tiktok", f"--data_path={fast['data_path']}", f"--build_dir={fast['build_dir']}",
              "--epochs=1", "--show_progress=False", "--nproc=1", "--world_size=2", f"--port={port}",
              "--ip=127.0.0.1"]
    folders = [tmp_path / "first", tmp_path / "second"]
    runs = []
    for offset, folder in enumerate(folders):
        folder.mkdir()
        runs.append(subprocess.Popen([sys.executable, str(REPO / "run_recbole_robust.py"), *common,
                                      f"--group_offset={offset}"], cwd=folder, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True))
    outputs = [run.communicate(timeout=300) for run in runs]
    assert [run.returncode for run in runs] == [0, 0], outputs[0][1][-2000:] + outputs[1][1][-2000:]
    assert glob.glob(str(folders[0] / "log" / "BPR" / "*.log")) and glob.glob(str(folders[0] / "saved" / "*.pth"))
    assert not glob.glob(str(folders[1] / "log" / "**" / "*.log"), recursive=True)
    assert not glob.glob(str(folders[1] / "saved" / "*.pth"))


def test_searches_refuse_several_processes(fast, tmp_path):
    from recbole_robust.tune import tune

    space = tmp_path / "space.yaml"
    space.write_text("learning_rate: {grid: [0.01, 0.001]}\n")
    with pytest.raises(RecBoleRobustError, match="a Ray trial is one process"):
        tune("BPR", "tiktok", str(space), config_dict={**fast, "nproc": 2})
