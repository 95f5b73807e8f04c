"""The perturbation engine: norms, directions, lambda = 0, validation, stages."""
import pytest
import torch

from recbole_robust.errors import RecBoleRobustError
from recbole_robust.quick_start import build_model, load_data, make_config
from recbole_robust.registry import get_trainer
from recbole_robust.perturb.engine import (
    AdversarialLoss, call_with, named_tensor, parse_terms, perturbation, term_perturbations,
)


@pytest.mark.parametrize("adv_type", ["fgm", "random"])
def test_row_perturbation_has_norm_eps_on_rows_the_gradient_reaches(adv_type):
    grad = torch.randn(6, 5)
    grad[2] = 0
    noise = perturbation(grad, 0.3, "row", adv_type)
    norms = noise.norm(dim=1)
    assert torch.allclose(norms[[0, 1, 3, 4, 5]], torch.full((5,), 0.3), atol=1e-6)
    assert norms[2] == 0


@pytest.mark.parametrize("adv_type", ["fgm", "random"])
def test_tensor_perturbation_has_norm_eps(adv_type):
    noise = perturbation(torch.randn(7, 4), 2.5, "tensor", adv_type)
    assert noise.norm().item() == pytest.approx(2.5, rel=1e-6)


def test_fgm_is_the_normalised_gradient_and_sign_is_eps_sign():
    grad = torch.tensor([[3.0, -4.0], [0.0, 2.0]])
    assert torch.allclose(perturbation(grad, 1.0, "row"), torch.tensor([[0.6, -0.8], [0.0, 1.0]]))
    assert torch.equal(perturbation(grad, 0.1, "row", "sign"), 0.1 * grad.sign())


@pytest.fixture
def vbpr_batch(fast):
    config = make_config("AMR", "ml-100k", config_dict=fast)
    _, train_data, _, _ = load_data(config)
    model = build_model(config, train_data)
    batch = next(iter(train_data))
    return config, model, batch, train_data


def test_fgm_raises_the_loss_more_than_random_noise_of_the_same_norm(vbpr_batch):
    config, model, batch, _ = vbpr_batch
    terms = parse_terms({**config.final_config_dict, "adv_eps": 0.5}, model)
    clean = model.rec_loss(batch).item()
    results = {}
    for adv_type in ("fgm", "random"):
        noise = term_perturbations(model, terms[0], adv_type, model.rec_loss, batch)
        assert torch.allclose(noise["item_features"].norm(dim=1).max(), torch.tensor(0.5))
        shifted = {"item_features": model.item_features + noise["item_features"]}
        results[adv_type] = call_with(model, shifted, model.rec_loss, batch).item() - clean
    assert results["fgm"] > 0 and results["fgm"] > 3 * abs(results["random"])


def test_lambda_zero_gives_the_clean_loss_exactly(vbpr_batch):
    config, model, batch, _ = vbpr_batch
    terms = parse_terms({**config.final_config_dict, "adv_lambda": 0.0}, model)
    assert torch.equal(AdversarialLoss(model, terms)(batch), model.calculate_loss(batch))
    with_adversary = AdversarialLoss(model, parse_terms(config, model))(batch)
    assert with_adversary > model.calculate_loss(batch)  # clean + lambda * perturbed loss (> 0)


def test_model_is_unchanged_by_the_engine(vbpr_batch):
    config, model, batch, _ = vbpr_batch
    before = {k: v.clone() for k, v in model.state_dict().items()}
    features = model.item_features.clone()
    AdversarialLoss(model, parse_terms(config, model))(batch).backward()
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert torch.equal(features, model.item_features) and named_tensor(model, "item_features") is model.item_features


@pytest.mark.parametrize(
    "override, message",
    [
        ({"adv_eps": -0.1}, "adv_eps must be >= 0"),
        ({"adv_lambda": -1}, "adv_lambda must be >= 0"),
        ({"adv_targets": ["decoder.weight"]}, "cannot be perturbed at 'decoder.weight'"),
        ({"adv_targets": ["item_features", "item_embedding.weight"], "adv_eps": [0.1, 0.2, 0.3]},
         "adv_eps has 3 values for 2 adversarial terms"),
        ({"adv_type": "pgd"}, "adv_type must be one of fgm, sign, random"),
        ({"adv_eps": "big"}, "adv_eps must be >= 0 and finite"),
    ],
)
def test_invalid_adversarial_settings(vbpr_batch, override, message):
    config, model, _, _ = vbpr_batch
    with pytest.raises(RecBoleRobustError, match=message):
        parse_terms({**config.final_config_dict, **override}, model)


def test_stage_switch_to_adagrad(fast):
    config = make_config("APR", "ml-100k", config_dict={
        **fast, "learner": "adam", "adv_learner": "adagrad", "adv_start_epoch": 1, "epochs": 2,
    })
    _, train_data, valid_data, _ = load_data(config)
    trainer = get_trainer(config["MODEL_TYPE"], "APR")(config, build_model(config, train_data))
    assert isinstance(trainer.optimizer, torch.optim.Adam)
    seen = []
    trainer.fit(train_data, valid_data, callback_fn=lambda e, s: seen.append(type(trainer.optimizer)))
    assert seen == [torch.optim.Adam, torch.optim.Adagrad]


def test_early_stopping_waits_for_the_adversarial_stage(fast):
    config = make_config("APR", "ml-100k", config_dict={**fast, "adv_start_epoch": 3, "stopping_step": 2})
    _, train_data, _, _ = load_data(config)
    trainer = get_trainer(config["MODEL_TYPE"], "APR")(config, build_model(config, train_data))
    for epoch in (0, 1, 2):
        assert not trainer._enter_stage(epoch) and trainer.stopping_step == float("inf")  # pre-training
    trainer.cur_step = 7  # patience used up during pre-training
    assert trainer._enter_stage(3)
    assert trainer.stopping_step == 2 and trainer.cur_step == 0  # the adversarial stage gets fresh patience


def test_the_log_says_when_the_adversarial_stage_begins(fast, caplog):
    import logging

    config = make_config("APR", "ml-100k", config_dict={
        **fast, "adv_start_epoch": 1, "epochs": 2, "adv_learner": "adagrad"})
    _, train_data, valid_data, _ = load_data(config)
    trainer = get_trainer(config["MODEL_TYPE"], "APR")(config, build_model(config, train_data))
    with caplog.at_level(logging.INFO):
        trainer.log_stages()
        trainer.fit(train_data, valid_data, saved=False)
    assert "stages: epochs 0-0 pre-train without the adversary" in caplog.text
    assert "epoch 1: the adversarial stage begins" in caplog.text and "optimiser adagrad" in caplog.text
    caplog.clear()
    config = make_config("APR", "ml-100k", config_dict={**fast, "adv_start_epoch": 5, "epochs": 2})
    trainer = get_trainer(config["MODEL_TYPE"], "APR")(config, build_model(config, train_data))
    with caplog.at_level(logging.INFO):
        trainer.log_stages()
    assert any(r.levelno == logging.WARNING and "the adversary" in r.message and "never starts" in r.message
               for r in caplog.records)
