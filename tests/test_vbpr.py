"""VBPR end to end on ml-100k's derived content features."""
import pytest
import torch

from recbole_robust import run_recbole_robust
from recbole_robust.errors import RecBoleRobustError
from recbole_robust.quick_start import build_model, load_data, make_config
from recbole_robust.registry import get_trainer


def train(config_dict, model="VBPR", dataset="ml-100k"):
    config = make_config(model, dataset, config_dict=config_dict)
    _, train_data, valid_data, test_data = load_data(config)
    model = build_model(config, train_data)
    trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, model)
    trainer.fit(train_data, valid_data, saved=True)
    return trainer, trainer.evaluate(test_data)


def test_loss_falls_and_beats_random_ranking(fast):
    trainer, result = train({**fast, "epochs": 4})
    losses = [trainer.train_loss_dict[e] for e in range(4)]
    assert losses[-1] < 0.9 * losses[0]
    random_result = run_recbole_robust(model="Random", dataset="ml-100k", config_dict={**fast, "epochs": 1})
    assert result["recall@10"] > 4 * random_result["test_result"]["recall@10"]
    assert result["ndcg@10"] > 4 * random_result["test_result"]["ndcg@10"]


def test_sampled_evaluation(fast):
    config = {**fast, "eval_args": {"split": {"RS": [0.8, 0.1, 0.1]}, "order": "RO", "group_by": "user",
                                    "mode": "uni100"}}
    _, result = train(config)
    random_result = run_recbole_robust(model="Random", dataset="ml-100k", config_dict={**config, "epochs": 1})
    assert result["hit@10"] > 1.5 * random_result["test_result"]["hit@10"]


def test_modalities_selected_by_config(fast):
    config = make_config("VBPR", "ml-100k", config_dict={**fast, "modalities": ["genre"]})
    _, train_data, _, _ = load_data(config)
    model = build_model(config, train_data)
    assert model.content_projection.in_features == 20
    assert torch.equal(model.item_features, train_data._dataset.item_features["genre"])
    both = build_model(make_config("VBPR", "ml-100k", config_dict=fast), train_data)
    assert both.content_projection.in_features == 64 + 20


def test_unknown_modality_is_an_error(fast):
    with pytest.raises(RecBoleRobustError, match="unknown modality 'image'; this dataset has text, genre"):
        train({**fast, "modalities": ["image"]})


def test_same_seed_same_metrics(fast):
    first = run_recbole_robust(model="VBPR", dataset="ml-100k", config_dict=fast)
    second = run_recbole_robust(model="VBPR", dataset="ml-100k", config_dict=fast)
    assert first["test_result"] == second["test_result"]
    assert first["best_valid_result"] == second["best_valid_result"]


def test_multimodal_model_on_data_without_features(fast):
    with pytest.raises(RecBoleRobustError) as info:
        run_recbole_robust(model="VBPR", dataset="amazon", config_dict=fast)
    message = str(info.value)
    assert "image_feat.npy, text_feat.npy not found" in message and "MMRec" in message


def test_vbpr_on_tiktok_two_modalities(fast):
    trainer, result = train({**fast, "epochs": 1, "train_batch_size": 4096}, dataset="tiktok")
    assert trainer.model.content_projection.in_features == 2 * 32  # image + audio of the small tiktok
    assert result["recall@10"] >= 0


def test_full_sort_scores_follow_parameter_and_feature_changes(fast):
    from recbole.data.interaction import Interaction

    config = make_config("VBPR", "ml-100k", config_dict=fast)
    _, train_data, _, _ = load_data(config)
    model = build_model(config, train_data).eval()
    users = Interaction({"user_id": torch.tensor([1, 5])})

    def reference():
        gamma_i, content_i, bias_i = model.item_representation()
        u = users["user_id"]
        return (model.user_embedding(u) @ gamma_i.T + model.user_content_embedding(u) @ content_i.T + bias_i).view(-1)

    with torch.no_grad():
        first = model.full_sort_predict(users)
        assert torch.allclose(first, reference())
        model.content_projection.weight.mul_(2.0)  # an in-place update, as an optimiser step makes
        second = model.full_sort_predict(users)
        assert not torch.allclose(first, second) and torch.allclose(second, reference())
        model.item_features = model.item_features + 0.5  # a new feature tensor, as a perturbation is
        third = model.full_sort_predict(users)
        assert not torch.allclose(second, third) and torch.allclose(third, reference())


def test_predict_equals_the_pairwise_score_and_follows_changes(fast):
    """``predict`` (sampled-negative protocols) gathers from the items' representations computed once per
    evaluation; it must equal the per-pair score, also for cold items and after an update."""
    from recbole.data.interaction import Interaction

    config = make_config("AMR", "ml-100k", config_dict={**fast, "item_bias": True})
    _, train_data, _, _ = load_data(config)
    model = build_model(config, train_data).eval()
    users, items = torch.tensor([1, 1, 5, 7]), torch.tensor([3, 1600, 3, model.n_items - 1])
    pairs = Interaction({"user_id": users, "item_id": items})
    with torch.no_grad():
        assert torch.allclose(model.predict(pairs), model.score(users, items), atol=1e-6)
        model.content_projection.weight.mul_(2.0)
        assert torch.allclose(model.predict(pairs), model.score(users, items), atol=1e-6)
