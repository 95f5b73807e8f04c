"""Mirror Gradient: semantics of the authors' code, any optimiser, any model, validation."""
import pytest
import torch

from recbole_robust import run_recbole_robust
from recbole_robust.errors import RecBoleRobustError
from recbole_robust.quick_start import build_model, load_data, make_config
from recbole_robust.registry import get_trainer
from recbole_robust.trainer.mirror import MirrorOptimizer


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


def test_second_step_of_a_mirror_pair_ascends(fast):
    config = make_config("BPR", "ml-100k", config_dict={**fast, "learner": "sgd", "learning_rate": 0.5})
    _, train_data, _, _ = load_data(config)
    model = build_model(config, train_data)
    batch = next(iter(train_data))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    losses = []

    def loss_func(interaction):
        loss = model.calculate_loss(interaction)
        losses.append(loss.item())
        return loss

    mirror = MirrorOptimizer(optimizer, loss_func, alpha1=1.0, alpha2=0.5, interval=1)
    mirror.zero_grad()
    mirror.record(batch).backward()
    mirror.step()  # descent with alpha1, then the recomputed loss ascends with alpha2
    after_pair = model.calculate_loss(batch).item()
    before, after_descent = losses
    assert after_descent < before  # the first step descended
    assert after_pair > after_descent  # the mirror step ascended on the same batch


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
    assert isinstance(trainer.optimizer, torch.optim.Adagrad)  # the wrapper is gone after each epoch


@pytest.mark.parametrize(
    "override, message",
    [
        ({"mg_alpha1": 0.1, "mg_alpha2": 0.1}, "mg_alpha1 must be greater than mg_alpha2"),
        ({"mg_alpha1": 0.1, "mg_alpha2": 0.5}, "mg_alpha1 must be greater than mg_alpha2"),
        ({"mg_interval": 0}, "mg_interval must be an integer >= 1"),
        ({"mg_alpha2": -0.1}, "mg_alpha2 must be >= 0"),
    ],
)
def test_invalid_mirror_settings(fast, override, message):
    with pytest.raises(RecBoleRobustError, match=message):
        run_recbole_robust(model="BPR", dataset="ml-100k", config_dict={**fast, "mirror_gradient": True, **override})


def test_trainers_with_their_own_loop_are_refused(fast):
    with pytest.raises(RecBoleRobustError, match="RecVAETrainer replaces"):
        run_recbole_robust(model="RecVAE", dataset="ml-100k", config_dict={**fast, "mirror_gradient": True})
