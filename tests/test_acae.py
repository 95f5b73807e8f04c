"""CAE / ACAE: eq. 1 by hand, lambda = 0, weight noise, stages, protocol, decoder-noise attack."""
import numpy as np
import pandas as pd
import pytest
import torch

from recbole_robust import run_recbole_robust
from recbole_robust.quick_start import build_model, load_data, make_config
from recbole_robust.registry import get_trainer
from recbole_robust.perturb.engine import AdversarialLoss, parse_terms, term_perturbations


@pytest.fixture
def cae(fast):
    config = make_config("ACAE", "filmtrust", config_dict=fast, preset="acae")
    _, train_data, _, _ = load_data(config)
    return config, build_model(config, train_data), next(iter(train_data)), train_data


def test_forward_is_eq_1(cae):
    _, model, _, _ = cae
    torch.manual_seed(0)
    user = torch.tensor([3, 7])
    y = (torch.rand(2, model.n_items) < 0.05).float()
    w1, b1 = model.encoder.weight.detach().numpy(), model.encoder.bias.detach().numpy()
    w2, b2 = model.decoder.weight.detach().numpy(), model.decoder.bias.detach().numpy()
    p = model.user_embedding.weight.detach().numpy()[user.numpy()]
    hidden = 1 / (1 + np.exp(-(y.numpy() @ w1.T + p + b1)))  # h = sigmoid
    expected = hidden @ w2.T + b2  # f = identity
    assert np.allclose(model(user, y).detach().numpy(), expected, atol=1e-5)


def test_predict_scores_each_distinct_user_once_and_equals_full_sort(cae):
    from recbole.data.interaction import Interaction
    _, model, _, _ = cae
    model.eval()
    user = torch.tensor([5, 2, 5, 9, 2, 5])  # repeated and unordered, as sampled negatives arrive
    item = torch.tensor([1, 4, 7, 0, 9, 1])
    calls = []
    forward = model.forward
    model.forward = lambda u, y: calls.append(len(u)) or forward(u, y)
    with torch.no_grad():
        scores = model.predict(Interaction({"user_id": user, "item_id": item}))
        full = model.full_sort_predict(Interaction({"user_id": user})).view(len(user), -1)
    assert calls[0] == 3  # users 2, 5, 9
    assert torch.allclose(scores, full[torch.arange(len(user)), item], atol=1e-6)


def test_loss_is_cross_entropy_over_all_items_plus_l2(cae):
    config, model, batch, _ = cae
    users = torch.unique(batch["user_id"])
    y = model.get_rating_matrix(users)
    logits = model(users, y)
    ce = -(y * torch.log(torch.sigmoid(logits)) + (1 - y) * torch.log(1 - torch.sigmoid(logits))).sum()
    assert model.rec_loss(batch).item() == pytest.approx(ce.item(), rel=1e-4)
    l2 = sum(p.pow(2).sum() for p in model.parameters())
    assert model.calculate_loss(batch).item() == pytest.approx((ce + config["reg_weight"] * l2).item(), rel=1e-4)


def test_acae_with_zero_lambdas_is_cae(cae):
    config, model, batch, _ = cae
    terms = parse_terms({**config.final_config_dict, "adv_lambda": [0.0, 0.0]}, model)
    assert torch.equal(AdversarialLoss(model, terms)(batch), model.calculate_loss(batch))
    assert AdversarialLoss(model, parse_terms(config, model))(batch) > model.calculate_loss(batch)


def test_weight_noise_has_norm_eps(cae):
    config, model, batch, _ = cae
    for term in parse_terms({**config.final_config_dict, "adv_eps": 7.0}, model):
        noise = term_perturbations(model, term, "fgm", model.rec_loss, batch)
        (name,) = term.names
        assert noise[name].shape == model.get_parameter(name).shape
        assert noise[name].norm().item() == pytest.approx(7.0, rel=1e-5)


def test_two_stages_switch_to_adagrad(fast):
    config = make_config("ACAE", "filmtrust", config_dict={**fast, "adv_start_epoch": 1}, preset="acae")
    _, train_data, valid_data, _ = load_data(config)
    trainer = get_trainer(config["MODEL_TYPE"], "ACAE")(config, build_model(config, train_data))
    optimisers = []
    trainer.fit(train_data, valid_data, callback_fn=lambda e, s: optimisers.append(type(trainer.optimizer)))
    assert optimisers == [torch.optim.Adam, torch.optim.Adagrad]


def test_acae_protocol_on_filmtrust(fast):
    config = make_config("CAE", "filmtrust", config_dict=fast, preset="acae")
    assert config["eval_args"]["order"] == "RO"  # FilmTrust has no timestamps
    assert config["test_neg_sample_args"]["sample_num"] == 200
    config = make_config("CAE", "ciaodvd", config_dict=fast, preset="acae")
    assert config["eval_args"]["order"] == "TO"


def test_decoder_noise_lowers_hr_of_a_trained_cae(fast):
    result = run_recbole_robust(model="CAE", dataset="filmtrust", preset="acae", config_dict={
        **fast, "epochs": 5, "attack": "fgm", "attack_targets": ["decoder.weight"], "attack_eps": [2.0, 8.0],
        "attack_metric": "hit@5",
    })
    attack = result["analyses"]["attack"].data
    clean = attack["clean"]["hit@5"]
    fgm = {r["eps"]: r["hit@5"] for r in attack["rows"] if r["method"] == "fgm"}
    rand = {r["eps"]: r["hit@5"] for r in attack["rows"] if r["method"] == "random"}
    assert fgm[8.0] < clean and fgm[8.0] <= fgm[2.0]
    assert clean - rand[8.0] < clean - fgm[8.0]


def test_filmtrust_binarised_above_2(tmp_path):
    src = tmp_path / "filmtrust"
    src.mkdir()
    (src / "ratings.txt").write_text("1 1 2\n1 2 2.5\n2 1 4\n2 2 0.5\n1 2 3\n")
    from recbole.config import Config
    from recbole.data import create_dataset

    config = Config(model="CAE", dataset="filmtrust",
                    config_dict={"data_path": str(tmp_path), "build_dir": str(tmp_path / "b")})
    dataset = create_dataset(config)
    kept = pd.DataFrame({"u": dataset.id2token("user_id", np.asarray(dataset.inter_feat["user_id"])),
                         "i": dataset.id2token("item_id", np.asarray(dataset.inter_feat["item_id"]))})
    assert sorted(map(tuple, kept.values.tolist())) == [("1", "2"), ("2", "1")]  # > 2; the repeat keeps 2.5
