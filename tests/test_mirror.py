"""Mirror Gradient: semantics of the authors' code, any optimiser, any model, validation."""
import pytest
import torch

from recbole_robust import run_recbole_robust
from recbole_robust.errors import RecBoleRobustError
from recbole_robust.quick_start import build_model, load_data, make_config
from recbole_robust.registry import get_trainer


def trained_parameters(fast, **config):
    config = make_config("BPR", "ml-100k", config_dict={**fast, "learner": "sgd", "epochs": 1, **config})
    _, train_data, _, _ = load_data(config)
    trainer = get_trainer(config["MODEL_TYPE"], "BPR")(config, build_model(config, train_data))
    trainer._train_epoch(train_data, 0)
    return trainer.model.state_dict()


def test_alpha2_zero_interval_one_is_sgd_with_scaled_learning_rate(fast):
    mirrored = trained_parameters(fast, learning_rate=0.01, mirror_gradient=True, mg_alpha1=3.0, mg_alpha2=0.0,
                                  mg_interval=1)
    scaled = trained_parameters(fast, learning_rate=0.03)
    plain = trained_parameters(fast, learning_rate=0.01)
    for name in scaled:
        assert torch.allclose(mirrored[name], scaled[name], atol=1e-6)
        assert not torch.allclose(mirrored[name], plain[name], atol=1e-6)


def bpr_trainer(fast, **config):
    config = make_config("BPR", "ml-100k", config_dict={**fast, "learner": "sgd", **config})
    _, train_data, _, _ = load_data(config)
    trainer = get_trainer(config["MODEL_TYPE"], "BPR")(config, build_model(config, train_data))
    return trainer, train_data


def one_batch(train_data):
    """The first batch of ``train_data`` as a one-batch loader (RecBole's loop iterates it)."""
    return [next(iter(train_data))]


def test_second_step_of_a_mirror_pair_ascends(fast):
    trainer, train_data = bpr_trainer(fast, learning_rate=0.5, mirror_gradient=True, mg_alpha1=1.0, mg_alpha2=0.5,
                                      mg_interval=1)
    batch = one_batch(train_data)
    model = trainer.model
    losses = []
    original = model.calculate_loss

    def recording(interaction):
        loss = original(interaction)
        losses.append(loss.item())
        return loss

    model.calculate_loss = recording
    trainer._train_epoch(batch, 0)
    after_pair = original(batch[0]).item()
    before, after_descent = losses  # RecBole's step, then the recomputation on the same batch
    assert after_descent < before  # the first step descended
    assert after_pair > after_descent  # the mirror step ascended on the same batch


def manual_mirror_pair(trainer, batch, lr, alpha1, alpha2, max_norm=None):
    """Parameters after one mirror pair of plain SGD, computed by hand."""
    model = trainer.model
    params = [p for p in model.parameters() if p.requires_grad]
    with torch.no_grad():
        saved = [p.detach().clone() for p in params]
    for sign, alpha in ((1.0, alpha1), (-1.0, alpha2)):
        model.zero_grad()
        (sign * alpha * model.calculate_loss(batch)).backward()
        if max_norm is not None:
            torch.nn.utils.clip_grad_norm_(params, max_norm)
        with torch.no_grad():
            for p in params:
                p -= lr * p.grad
    result = {n: t.detach().clone() for n, t in model.state_dict().items()}
    with torch.no_grad():
        for p, s in zip(params, saved):
            p.copy_(s)
    return result


def test_mirror_step_keeps_recboles_optimiser_and_uses_the_scheduled_learning_rate(fast):
    trainer, train_data = bpr_trainer(fast, learning_rate=1.0, mirror_gradient=True, mg_alpha1=1.0, mg_alpha2=0.5,
                                      mg_interval=1)
    optimizer = trainer.optimizer
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 0.1)  # lr 1.0 -> 0.1
    batch = one_batch(train_data)
    expected = manual_mirror_pair(trainer, batch[0], lr=0.1, alpha1=1.0, alpha2=0.5)
    seen = []
    original = trainer.model.calculate_loss
    trainer.model.calculate_loss = lambda i: (seen.append(trainer.optimizer), original(i))[1]
    trainer._train_epoch(batch, 0)
    scheduler.step()
    assert all(o is optimizer for o in seen) and isinstance(optimizer, torch.optim.SGD)
    for name, value in trainer.model.state_dict().items():
        assert torch.allclose(value, expected[name], atol=1e-6), name


def test_gradient_clipping_applies_to_both_steps(fast):
    clip = {"max_norm": 1e-3}
    trainer, train_data = bpr_trainer(fast, learning_rate=1.0, mirror_gradient=True, mg_alpha1=1.0, mg_alpha2=0.5,
                                      mg_interval=1, clip_grad_norm=clip)
    batch = one_batch(train_data)
    expected = manual_mirror_pair(trainer, batch[0], lr=1.0, alpha1=1.0, alpha2=0.5, max_norm=1e-3)
    unclipped_second = manual_mirror_pair(trainer, batch[0], lr=1.0, alpha1=1.0, alpha2=0.5)
    trainer._train_epoch(batch, 0)
    state = trainer.model.state_dict()
    for name in state:
        assert torch.allclose(state[name], expected[name], atol=1e-6), name
    assert any(not torch.allclose(state[n], unclipped_second[n], atol=1e-6) for n in state)


def test_gradient_scaler_gives_the_unscaled_result(fast):
    """With enable_scaler the second step goes through a GradScaler (scale 2^16): same weights as without."""
    plain_trainer, train_data = bpr_trainer(fast, learning_rate=0.5, mirror_gradient=True, mg_interval=1)
    batch = one_batch(train_data)
    expected = manual_mirror_pair(plain_trainer, batch[0], lr=0.5, alpha1=1.0, alpha2=0.1)
    trainer, _ = bpr_trainer(fast, learning_rate=0.5, mirror_gradient=True, mg_interval=1)
    trainer.enable_scaler = True  # RecBole turns it off without CUDA; the mirror step's scaler runs on the CPU
    trainer._train_epoch(batch, 0)
    assert trainer.mirror_step.scaler.is_enabled() and trainer.mirror_step.scaler.get_scale() > 1
    for name, value in trainer.model.state_dict().items():
        assert torch.allclose(value, expected[name], atol=1e-6), name


@pytest.mark.parametrize("learner", ["adam", "sgd", "adagrad", "rmsprop"])
def test_mirror_gradient_with_each_optimiser_on_a_builtin_model(fast, learner):
    result = run_recbole_robust(model="LightGCN", dataset="ml-100k", config_dict={
        **fast, "epochs": 1, "learner": learner, "mirror_gradient": True, "mg_alpha1": 1.0, "mg_alpha2": 0.1,
        "mg_interval": 3, "n_layers": 1,
    })
    assert result["test_result"]["recall@10"] > 0


def test_mirror_gradient_composes_with_the_adversary(fast):
    config = make_config("AMR", "ml-100k", config_dict={**fast, "epochs": 2, "adv_start_epoch": 0,
                                                        "mirror_gradient": True})
    _, train_data, valid_data, _ = load_data(config)
    trainer = get_trainer(config["MODEL_TYPE"], "AMR")(config, build_model(config, train_data))
    trainer.fit(train_data, valid_data)
    assert trainer.train_loss_dict[1] < trainer.train_loss_dict[0]
    assert isinstance(trainer.optimizer, torch.optim.Adagrad)
    assert not trainer.optimizer._optimizer_step_post_hooks  # the mirror step is detached after each epoch


@pytest.mark.parametrize(
    "override, message",
    [
        ({"mg_alpha1": 0.1, "mg_alpha2": 0.1}, "mg_alpha1 must be greater than mg_alpha2"),
        ({"mg_alpha1": 0.1, "mg_alpha2": 0.5}, "mg_alpha1 must be greater than mg_alpha2"),
        ({"mg_interval": 0}, "mg_interval must be an integer >= 1"),
        ({"mg_alpha2": -0.1}, "mg_alpha2 must be a number >= 0"),
    ],
)
def test_invalid_mirror_settings(fast, override, message):
    with pytest.raises(RecBoleRobustError, match=message):
        run_recbole_robust(model="BPR", dataset="ml-100k", config_dict={**fast, "mirror_gradient": True, **override})


def test_trainers_with_their_own_loop_are_refused(fast):
    with pytest.raises(RecBoleRobustError, match="RecVAETrainer replaces"):
        run_recbole_robust(model="RecVAE", dataset="ml-100k", config_dict={**fast, "mirror_gradient": True})
