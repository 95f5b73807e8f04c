"""Checkpoints: tensors and plain data only (weights_only=True), atomic, resumable."""
import glob
import os

import pytest
import torch

from recbole_robust.errors import RecBoleRobustError
from recbole_robust.quick_start import build_model, load_data, make_config, run_recbole_robust
from recbole_robust.registry import get_trainer
from recbole_robust.trainer import load_checkpoint

from conftest import killed_run


def test_checkpoint_round_trip_weights_only(fast):
    result = run_recbole_robust(model="VBPR", dataset="ml-100k", config_dict=fast)
    path = result["saved_model_file"]
    checkpoint = torch.load(path, weights_only=True)
    assert checkpoint["config"]["model"] == "VBPR" and checkpoint["epoch"] >= 0

    config = make_config("VBPR", "ml-100k", config_dict=fast)
    _, train_data, _, test_data = load_data(config)
    model = build_model(config, train_data)
    model.load_state_dict(checkpoint["state_dict"])
    trainer = get_trainer(config["MODEL_TYPE"], "VBPR")(config, model)
    assert trainer.evaluate(test_data, model_file=path) == result["test_result"]
    # the item features are a non-persistent buffer: checkpoints hold parameters only
    assert "item_features" not in checkpoint["state_dict"]
    assert not glob.glob(os.path.join(os.path.dirname(path), "*.tmp*"))


def test_killed_run_resumes_from_last_checkpoint(fast):
    config_dict = {**fast, "epochs": 4}
    uninterrupted = run_recbole_robust(model="VBPR", dataset="ml-100k", config_dict=config_dict)

    last = killed_run(1, model="VBPR", dataset="ml-100k", config_dict=config_dict)
    assert torch.load(last, weights_only=True)["epoch"] == 1

    epochs_seen = []
    resumed = run_recbole_robust(
        model="VBPR", dataset="ml-100k", config_dict=config_dict, resume=last,
        callback_fn=lambda epoch_idx, score: epochs_seen.append(epoch_idx),
    )
    assert epochs_seen == [2, 3]
    assert resumed["saved_model_file"] == os.path.abspath(last.replace(".last.pth", ".pth"))
    assert resumed["test_result"] == uninterrupted["test_result"]  # same batches, negatives, weights


def test_resume_rejects_other_model_and_foreign_files(fast, tmp_path):
    result = run_recbole_robust(model="BPR", dataset="ml-100k", config_dict={**fast, "epochs": 1})
    with pytest.raises(RecBoleRobustError, match="is of model BPR, not VBPR"):
        run_recbole_robust(model="VBPR", dataset="ml-100k", config_dict=fast, resume=result["saved_model_file"])
    foreign = tmp_path / "foreign.pth"
    torch.save({"config": object()}, foreign)
    with pytest.raises(RecBoleRobustError, match="cannot be loaded with weights_only=True"):
        load_checkpoint(str(foreign))
    with pytest.raises(RecBoleRobustError, match="not found"):
        load_checkpoint(str(tmp_path / "missing.pth"))


def test_layergcn_resumes_exactly_after_an_odd_epoch(fast):
    """LayerGCN alternates degree-sensitive and uniform edge pruning epoch by epoch; the alternation is part of the
    checkpoint, so a run killed after its first epoch continues with the uniform one. One thread: multithreaded
    sparse products sum in an order that varies from run to run in the last bits."""
    config_dict = {**fast, "epochs": 3, "threads": 1, "dropout": 0.2}
    uninterrupted = run_recbole_robust(model="LayerGCN", dataset="tiktok", config_dict=config_dict)
    last = killed_run(0, model="LayerGCN", dataset="tiktok", config_dict=config_dict)
    resumed = run_recbole_robust(model="LayerGCN", dataset="tiktok", config_dict=config_dict, resume=last)
    assert resumed["test_result"] == uninterrupted["test_result"]
    final = [torch.load(r["saved_model_file"].replace(".pth", ".last.pth"), weights_only=True)["state_dict"]
             for r in (uninterrupted, resumed)]
    assert all(torch.equal(final[0][k], final[1][k]) for k in final[0])  # the same weights after the third epoch
