"""VAEGAN: discriminator T, annealing, masking, contractive penalty, ablations, NaN stop, resume."""
import os
import re

import pytest
import torch

from recbole_robust import run_recbole_robust
from recbole_robust.errors import RecBoleRobustError, TrainingDiverged
from recbole_robust.quick_start import build_model, load_data, make_config
from recbole_robust.registry import get_trainer
from recbole_robust.trainer.gan import GANTrainer

from conftest import killed_run


def vaegan(fast, **settings):
    config = make_config("VAEGAN", "ml-100k", config_dict={**fast, **settings}, preset="vaegan")
    _, train_data, valid_data, test_data = load_data(config)
    return config, build_model(config, train_data), train_data, valid_data, test_data


def test_discriminator_t_learns_the_log_density_ratio(fast):
    """Toy problem: q(z|x) = N(mu(x), 0.5^2 I), p(z) = N(0, I) in 2-D. T trained with eq. 4 separates
    the two and approaches T* = log q(z|x) - log p(z) (eq. 5)."""
    torch.manual_seed(0)
    config, model, *_ = vaegan(fast, variant="AVB", latent_size=2, disc_hidden_size=64)
    x = model.get_rating_matrix(torch.arange(1, 257))
    mu = torch.tanh(x @ torch.randn(model.n_items, 2) * 0.5)
    std = 0.5
    optimizer = torch.optim.Adam(model.t_net.parameters(), lr=3e-3)
    for _ in range(600):
        z = mu + std * torch.randn_like(mu)
        loss = model.discriminator_losses({"x": x, "z": z})["T"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    with torch.no_grad():
        z_q = mu + std * torch.randn_like(mu)
        z_p = torch.randn_like(mu)
        accuracy = ((model.t_logit(x, z_q) > 0).float().mean() + (model.t_logit(x, z_p) < 0).float().mean()) / 2
        z = torch.cat([z_q, z_p])
        xx = torch.cat([x, x])
        mm = torch.cat([mu, mu])
        true_ratio = (-((z - mm) ** 2).sum(1) / (2 * std**2) - 2 * torch.log(torch.tensor(std))
                      + (z**2).sum(1) / 2)
        t = model.t_logit(xx, z)
        correlation = torch.corrcoef(torch.stack([t, true_ratio]))[0, 1]
    assert accuracy > 0.8
    assert correlation > 0.9


def test_alpha_is_annealed_linearly_to_alpha_max(fast):
    config, model, train_data, valid_data, _ = vaegan(fast, alpha_max=0.2, anneal_epochs=4, epochs=6)
    assert [model.alpha(p) for p in (0, 1, 2, 4, 10)] == pytest.approx([0, 0.05, 0.1, 0.2, 0.2])
    trainer = get_trainer(config["MODEL_TYPE"], "VAEGAN")(config, model)
    assert isinstance(trainer, GANTrainer)
    trainer.fit(train_data, valid_data)
    # alpha is updated every batch; the epoch's last batch has alpha(epoch + 1)
    assert [trainer.loss_history[e]["alpha"] for e in range(6)] == pytest.approx([0.05, 0.1, 0.15, 0.2, 0.2, 0.2])
    config, model, *_ = vaegan(fast, alpha_max=0.3, anneal_epochs=0)
    assert model.alpha(0) == model.alpha(7) == 0.3


def test_d_sends_no_gradient_to_items_the_user_has_not_interacted_with(fast):
    config, model, *_ = vaegan(fast, variant="AVB+D")
    batch = model.generator_batch(torch.arange(1, 33))
    logits = batch["logits"].detach().requires_grad_(True)
    _, parts = model.generator_loss({**batch, "logits": logits}, alpha=0.0)
    (grad,) = torch.autograd.grad(parts["D"], logits)
    observed = batch["x"] > 0
    assert torch.all(grad[~observed] == 0)
    assert torch.count_nonzero(grad[observed]) == observed.sum()
    # real samples are the histories themselves; fakes are the reconstruction restricted to them
    fake = model.masked_reconstruction(logits, batch["x"])
    assert torch.all(fake[~observed] == 0) and torch.all((fake[observed] > 0) & (fake[observed] < 1))


def test_contractive_penalty_equals_brute_force_jacobian(fast):
    config, model, *_ = vaegan(fast, hidden_size=7, latent_size=3)
    torch.manual_seed(1)
    x = model.get_rating_matrix(torch.arange(1, 6))
    h = torch.nn.functional.normalize(x) + 0.3 * torch.randn_like(x)  # some encoder input x~ + e1
    e2 = 0.3 * torch.randn(len(x), 7)
    pre = model.encoder_hidden(h)
    closed_form = model.contractive_penalty(pre)
    for u in range(len(x)):
        def encoder(v):
            return model.encoder_out(torch.tanh(model.encoder_hidden(v)) + e2[u])
        jacobian = torch.autograd.functional.jacobian(encoder, h[u])  # [latent, items]
        assert jacobian.shape == (3, model.n_items)
        assert closed_form[u].item() == pytest.approx(jacobian.pow(2).sum().item(), rel=1e-4)


@pytest.mark.parametrize("variant", ["AVB", "AVB+D", "AVB+D+C"])
def test_each_variant_trains_and_beats_random(fast, variant):
    config, model, train_data, valid_data, test_data = vaegan(fast, variant=variant, epochs=8, anneal_epochs=4)
    assert set(model.players()) == ({"G", "T"} if variant == "AVB" else {"G", "T", "D"})
    trainer = get_trainer(config["MODEL_TYPE"], "VAEGAN")(config, model)
    trainer.fit(train_data, valid_data)
    history = trainer.loss_history
    assert history[7]["G"] < history[0]["G"]
    assert history[7]["G.rec"] < 0.5 * history[0]["G.rec"]
    assert ("G.D" in history[0]) == (variant != "AVB") and ("G.C" in history[0]) == (variant == "AVB+D+C")
    result = trainer.evaluate(test_data)
    random_result = run_recbole_robust(model="Random", dataset="ml-100k", preset="vaegan",
                                       config_dict={**fast, "epochs": 1})
    assert result["recall@20"] > 3 * random_result["test_result"]["recall@20"]
    assert result["ndcg@5"] > 3 * random_result["test_result"]["ndcg@5"]


def test_predict_equals_full_sort_on_repeated_users(fast):
    from recbole.data.interaction import Interaction
    _, model, _, _, _ = vaegan(fast)
    model.eval()
    user, item = torch.tensor([7, 3, 7, 7, 12]), torch.tensor([5, 5, 40, 2, 9])
    with torch.no_grad():
        scores = model.predict(Interaction({"user_id": user, "item_id": item}))
        full = model.full_sort_predict(Interaction({"user_id": user})).view(len(user), -1)
    assert torch.allclose(scores, full[torch.arange(len(user)), item], atol=1e-6)


def test_weak_generalisation_preset_splits_each_user_80_20(fast):
    config, model, train_data, valid_data, test_data = vaegan(fast)
    train, test = train_data._dataset, test_data._dataset
    assert len(valid_data) == 0 and config["metrics"] == ["Recall", "NDCG", "MRR"] and config["topk"] == [5, 20]
    uid = train.uid_field
    n_train = torch.bincount(train.inter_feat[uid], minlength=train.user_num)
    n_test = torch.bincount(test.inter_feat[uid], minlength=train.user_num)
    total = n_train + n_test
    users = total > 0
    assert torch.all(total[users] >= 5)
    share = n_test[users].float() / total[users].float()
    assert abs(share.mean().item() - 0.2) < 0.01
    assert train.inter_num + test.inter_num == 100_000  # every rating is a positive interaction


def test_nan_loss_stops_training_and_keeps_the_best_checkpoint(fast):
    config, model, train_data, valid_data, _ = vaegan(
        fast, epochs=5, eval_step=1, eval_args={"split": {"RS": [0.8, 0.1, 0.1]}, "order": "RO",
                                                 "group_by": "user", "mode": "full"})
    trainer = get_trainer(config["MODEL_TYPE"], "VAEGAN")(config, model)

    def poison_after_epoch_1(epoch_idx, valid_score):
        if epoch_idx == 1:
            with torch.no_grad():
                model.decoder[2].weight.fill_(float("nan"))

    with pytest.raises(TrainingDiverged, match=r"D loss is nan in epoch 2: training stopped, the best checkpoint"):
        trainer.fit(train_data, valid_data, callback_fn=poison_after_epoch_1)
    checkpoint = torch.load(trainer.saved_model_file, weights_only=True)
    assert checkpoint["epoch"] in (0, 1)
    assert all(torch.isfinite(t).all() for t in checkpoint["state_dict"].values())
    assert set(checkpoint["optimizer"]) == {"G", "T", "D"}  # one optimiser per player


def test_nan_loss_of_recbole_loop_is_a_clear_error(fast):
    config = make_config("BPR", "ml-100k", config_dict={**fast, "epochs": 3, "eval_step": 1})
    _, train_data, valid_data, _ = load_data(config)
    model = build_model(config, train_data)
    trainer = get_trainer(config["MODEL_TYPE"], "BPR")(config, model)

    def poison(epoch_idx, valid_score):
        with torch.no_grad():
            model.user_embedding.weight.fill_(float("nan"))

    with pytest.raises(TrainingDiverged, match="training loss is nan in epoch 1: training stopped, the best"):
        trainer.fit(train_data, valid_data, callback_fn=poison)
    assert os.path.exists(trainer.saved_model_file)


def test_resumed_gan_run_equals_uninterrupted(fast):
    config_dict = {**fast, "epochs": 4, "eval_step": 1,
                   "eval_args": {"split": {"RS": [0.8, 0.1, 0.1]}, "order": "RO", "group_by": "user", "mode": "full"}}
    uninterrupted = run_recbole_robust(model="VAEGAN", dataset="ml-100k", preset="vaegan", config_dict=config_dict)

    last = killed_run(1, model="VAEGAN", dataset="ml-100k", preset="vaegan", config_dict=config_dict)
    resumed = run_recbole_robust(model="VAEGAN", dataset="ml-100k", preset="vaegan", config_dict=config_dict,
                                 resume=last)
    assert resumed["test_result"] == uninterrupted["test_result"]


@pytest.mark.parametrize("setting, message", [
    ({"variant": "AVB+C"}, "variant must be one of AVB, AVB+D, AVB+D+C"),
    ({"beta": -0.1}, "beta must be >= 0"),
    ({"noise_std": [0.1]}, "noise_std must be two standard deviations"),
    ({"likelihood": "poisson"}, "likelihood must be logistic or multinomial"),
])
def test_invalid_hyper_parameters_are_one_line_errors(fast, setting, message):
    with pytest.raises(RecBoleRobustError, match=re.escape(message)):
        vaegan(fast, **setting)


def test_adversarial_options_are_refused_by_the_gan_trainer(fast):
    with pytest.raises(RecBoleRobustError, match="need RecBole's training loop, which GANTrainer replaces"):
        run_recbole_robust(model="VAEGAN", dataset="ml-100k", preset="vaegan",
                           config_dict={**fast, "mirror_gradient": True})


def test_shipped_search_space_names_vaegan_parameters(fast):
    from recbole_robust.tune import read_search_space

    config, *_ = vaegan(fast)
    space = read_search_space("VAEGAN")
    assert {"alpha_max", "beta", "contractive_weight"} <= set(space)
    assert all(name in config.final_config_dict for name in space)
