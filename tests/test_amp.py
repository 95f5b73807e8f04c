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


@pytest.mark.parametrize("model", ["MMGCN", "LATTICE", "FREEDOM", "VAEGAN"])  # VAEGAN: the GAN trainer's loop
def test_graph_models_train_with_enable_amp(fast, model):
    result = run_recbole_robust(model, "tiktok", preset="mg", saved=False,
                                config_dict={**fast, "enable_amp": True, "epochs": 2})
    assert all(np.isfinite(v) for v in result["test_result"].values())
    assert result["test_result"]["recall@20"] > 0


@pytest.mark.parametrize("model, message", [
    ("LightGCN", "LightGCN cannot train with enable_amp (mixed precision) on cpu: expected scalar type"),
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


def test_the_adversary_gradient_is_scaled_and_unscaled(fast):
    """With a gradient scaler (enable_amp + enable_scaler), the adversary's gradient is that of the unscaled loss;
    where the scaled loss overflows, it is zero (no perturbation on that batch) and the scaler backs off."""
    from recbole_robust.perturb.engine import gradients, rec_loss_fn
    from recbole_robust.quick_start import build_model

    config = make_config("VBPR", "tiktok", config_dict=fast)
    _, train, _, _ = load_data(config)
    model = build_model(config, train)
    batch = next(iter(train))
    plain = gradients(model, ["item_features"], rec_loss_fn(model), batch)["item_features"]
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 12)
    scaled = gradients(model, ["item_features"], rec_loss_fn(model), batch, scaler=scaler)["item_features"]
    assert plain.abs().sum() > 0
    torch.testing.assert_close(scaled, plain)
    overflowing = torch.amp.GradScaler("cpu", init_scale=1e10)
    huge_loss = lambda interaction: rec_loss_fn(model)(interaction) * 1e30  # noqa: E731  (1e40 when scaled)
    zero = gradients(model, ["item_features"], huge_loss, batch, scaler=overflowing)["item_features"]
    assert torch.equal(zero, torch.zeros_like(plain)) and overflowing.get_scale() == 5e9


def test_rng_restore_with_fewer_gpus_visible(monkeypatch):
    """A checkpoint of a run on 2 GPUs resumed where 1 is visible restores that one's generator (RecBole's
    set_rng_state_all would fail on the missing device)."""
    from recbole_robust.trainer.checkpoint import rng_state, set_rng_state

    restored = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "get_rng_state_all", lambda: [])
    monkeypatch.setattr(torch.cuda, "set_rng_state", lambda state, device: restored.append(device))
    state = rng_state()
    state["cuda"] = [torch.zeros(16, dtype=torch.uint8), torch.ones(16, dtype=torch.uint8)]
    set_rng_state(state)
    assert restored == [0]


def test_user_graph_is_sampled_where_its_arrays_are():
    """DRAGON / DualGNN resample the user graph every epoch from buffers on the model's device; tensors and NumPy
    arrays give the same graph for the same random draws."""
    from recbole_robust.data.graphs import sampled_user_graph

    indptr, neighbours = np.array([0, 3, 4, 4]), np.array([1, 2, 0, 0])
    counts = np.array([3.0, 1.0, 2.0, 5.0], dtype=np.float32)
    from_numpy = sampled_user_graph(indptr, neighbours, counts, 2, torch.Generator().manual_seed(0))
    tensors = [torch.from_numpy(a) for a in (indptr, neighbours, counts)]
    from_tensors = sampled_user_graph(*tensors, 2, torch.Generator().manual_seed(0))
    assert from_tensors.device == tensors[0].device
    torch.testing.assert_close(from_tensors.to_dense(), from_numpy.to_dense())
    assert from_tensors.to_dense()[1].sum() == pytest.approx(1.0)  # user 1's one neighbour, repeated up to k
