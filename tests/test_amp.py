"""Mixed precision (enable_amp: autocast to bfloat16 on the CPU): graph products in float32, models that cannot are
refused before anything is written, and the check leaves the run's random state as it was."""
import numpy as np
import pytest
import torch

from recbole_robust.errors import RecBoleRobustError
from recbole_robust.model.layers import graph_product, sparse_product
from recbole_robust.quick_start import load_data, make_config, run_recbole_robust, validate_run


def test_graph_products_run_in_float32_under_autocast():
    rng = np.random.default_rng(0)
    dense = torch.from_numpy((rng.random((30, 30)) < 0.2) * rng.random((30, 30))).float()
    x = torch.randn(30, 8, requires_grad=True)
    expected = dense @ x
    (expected.sum() * 2).backward()
    grad = x.grad.clone()
    x.grad = None
    with torch.autocast("cpu", dtype=torch.bfloat16):
        fixed = graph_product(dense.to_sparse_csr(), x, dense.T.to_sparse_csr())
        learned = sparse_product(dense.to_sparse(), x)
    assert fixed.dtype == learned.dtype == torch.float32
    torch.testing.assert_close(fixed, expected)
    torch.testing.assert_close(learned, expected)
    (fixed.sum() + learned.sum()).backward()
    assert x.grad.dtype == torch.float32
    torch.testing.assert_close(x.grad, grad)
    half = x.detach().bfloat16().requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = graph_product(dense.to_sparse_csr(), half, dense.T.to_sparse_csr())
    out.sum().backward()
    assert half.grad.dtype == torch.bfloat16  # the gradient goes back in the input's dtype


@pytest.mark.parametrize("model", ["MMGCN", "LATTICE", "FREEDOM"])
def test_graph_models_train_with_enable_amp(fast, model):
    result = run_recbole_robust(model, "tiktok", preset="mg", saved=False,
                                config_dict={**fast, "enable_amp": True, "epochs": 2})
    assert all(np.isfinite(v) for v in result["test_result"].values())
    assert result["test_result"]["recall@20"] > 0


@pytest.mark.parametrize("model, message", [
    ("LightGCN", "LightGCN cannot train with enable_amp (mixed precision) on cpu: expected scalar type"),
    ("VAEGAN", "enable_amp (mixed precision) is not supported by GANTrainer"),
])
def test_models_that_cannot_are_refused_with_nothing_written(fast, tmp_path, model, message):
    build = tmp_path / "fresh"
    with pytest.raises(RecBoleRobustError, match=r"^" + message.replace("(", r"\(").replace(")", r"\)")) as error:
        validate_run(model, "tiktok", config_dict={**fast, "enable_amp": True, "build_dir": str(build)})
    assert "\n" not in str(error.value) and not build.exists()


def test_the_check_leaves_the_random_state_as_it_was(fast):
    from recbole_robust.trainer.trainer import check_mixed_precision
    from recbole_robust.quick_start import build_model

    config = make_config("BPR", "tiktok", config_dict={**fast, "enable_amp": True})
    _, train, _, _ = load_data(config)
    model = build_model(config, train)
    torch_state, loader_state, numpy_state = torch.get_rng_state(), train.generator.get_state(), np.random.get_state()
    check_mixed_precision(config, model, train)
    assert torch.equal(torch_state, torch.get_rng_state()) and torch.equal(loader_state, train.generator.get_state())
    assert np.array_equal(numpy_state[1], np.random.get_state()[1])
    assert all(p.grad is None for p in model.parameters())


def test_device_defaults_and_notes():
    """GPU hygiene that a CPU can check: the evaluation budget by device, and a search told it leaves GPUs idle."""
    from recbole_robust.data.dataloader import EVAL_MEMORY_MB, eval_memory_mb
    from recbole_robust.tune import gpu_note

    assert eval_memory_mb({"eval_memory_mb": None, "device": "cpu"}) == EVAL_MEMORY_MB["cpu"] == 16
    assert eval_memory_mb({"eval_memory_mb": None, "device": "cuda:0"}) == EVAL_MEMORY_MB["cuda"] == 1024
    assert eval_memory_mb({"eval_memory_mb": 4, "device": "cuda"}) == 4
    assert "every trial trains on the CPU" in gpu_note(0, 2)
    assert gpu_note(0.5, 2) is None and gpu_note(0, 0) is None
