"""The MG preset, point by point (properties/presets/mg.yaml), on small synthetic data."""
import numpy as np
import pytest
import torch

from conftest import write_small_datasets
from recbole_robust.quick_start import build_model, load_data, make_config
from recbole_robust.registry import get_trainer


@pytest.fixture(scope="module")
def cold_user_data(tmp_path_factory):
    """The small tiktok plus user 300, who has a valid and a test item but no training interaction."""
    root = write_small_datasets(tmp_path_factory.mktemp("cold"))
    with open(root / "tiktok" / "tiktok.inter", "a", newline="") as f:
        f.write("300\t1\t1\r\n300\t2\t2\r\n")
    return root


def mg_config(fast, model="BPR", data=None, **extra):
    config = {**fast, **extra}
    if data is not None:
        config["data_path"] = str(data)
        config["build_dir"] = str(data / "built")
    return make_config(model, "tiktok", config_dict=config, preset="mg")


def test_split_is_the_x_label_split(fast, small_data):
    config = mg_config(fast)
    _, train_data, valid_data, test_data = load_data(config)
    rows = np.loadtxt(small_data / "tiktok" / "tiktok.inter", skiprows=1, dtype=int)
    counts = [len(d.dataset.inter_feat) for d in (train_data, valid_data, test_data)]
    assert counts == [int((rows[:, 2] == label).sum()) for label in (0, 1, 2)]


def test_users_without_training_interactions_are_not_evaluated(fast, cold_user_data):
    config = mg_config(fast, data=cold_user_data)
    dataset, _, valid_data, test_data = load_data(config)
    cold = dataset.token2id("user_id", "300")
    for data in (valid_data, test_data):
        assert cold not in data.user_df["user_id"].tolist()
        assert len(data.user_df) == len(set(data.dataset.inter_feat["user_id"].tolist()))
    plain = make_config("BPR", "tiktok", config_dict={**fast, "data_path": str(cold_user_data),
                                                      "build_dir": str(cold_user_data / "built")})
    assert cold in load_data(plain)[3].user_df["user_id"].tolist()  # RecBole's protocol keeps the user


def test_metrics_are_per_user_averages_over_the_full_ranking(fast):
    config = mg_config(fast, epochs=1)
    _, train_data, valid_data, test_data = load_data(config)
    model = build_model(config, train_data)
    trainer = get_trainer(config["MODEL_TYPE"], "BPR")(config, model)
    trainer.fit(train_data, valid_data, saved=False)
    result = trainer.evaluate(test_data, load_best_model=False)
    users = test_data.user_df["user_id"]
    train = train_data.dataset.inter_matrix(form="csr").toarray() > 0
    test = test_data.dataset.inter_matrix(form="csr").toarray() > 0
    with torch.no_grad():
        scores = (model.user_embedding.weight[users] @ model.item_embedding.weight.T).numpy()
    scores[:, 0] = -np.inf
    scores[train[users.numpy()]] = -np.inf  # only training items are masked
    top = np.argsort(-scores, axis=1, kind="stable")[:, :20]
    hits = np.take_along_axis(test[users.numpy()], top, axis=1)
    for k in (5, 20):
        recall = (hits[:, :k].sum(1) / test[users.numpy()].sum(1)).mean()
        assert result[f"recall@{k}"] == pytest.approx(recall, abs=1e-4)


def test_selection_early_stopping_and_epoch_cap(fast, monkeypatch):
    config = mg_config({k: v for k, v in fast.items() if k != "epochs"})
    assert config["valid_metric"] == "recall@5" and config["eval_step"] == 1
    assert config["stopping_step"] == 20 and config["epochs"] == 1000
    assert config["topk"] == [5, 10, 20, 50] and config["seed"] == 2020  # the user's seed wins over 999
    _, train_data, valid_data, _ = load_data(config)
    trainer = get_trainer(config["MODEL_TYPE"], "BPR")(config, build_model(config, train_data))
    monkeypatch.setattr(trainer, "_train_epoch", lambda *a, **k: 0.0)
    scores = iter([0.1] + [0.1] * 100)
    monkeypatch.setattr(trainer, "_valid_epoch", lambda *a, **k: (next(scores), {"recall@5": 0.1}))
    validated = []
    trainer.fit(train_data, valid_data, saved=False, callback_fn=lambda e, s: validated.append(e))
    assert validated == list(range(22))  # the best, then 21 validations without improvement (> 20): stop


def test_model_defaults_under_the_preset_and_elsewhere(fast):
    vbpr = mg_config(fast, model="VBPR")
    assert vbpr["reg_weight"] == 2.0 and vbpr["reg_form"] == "mmrec" and not vbpr["item_bias"]
    assert vbpr["embedding_size"] == vbpr["content_embedding_size"] == 64
    assert mg_config(fast, model="MMGCN")["learning_rate"] == 0.0001
    assert mg_config(fast, model="FREEDOM")["reg_weight"] == 0.0
    paper = make_config("VBPR", "tiktok", config_dict=fast)
    assert paper["reg_weight"] == 1e-4 and paper["reg_form"] == "l2" and paper["item_bias"]
    assert mg_config(fast, model="VBPR", reg_weight=0.5)["reg_weight"] == 0.5  # the user's setting wins


def test_mmrec_regulariser_is_embloss_of_the_batch_vectors(fast):
    config = mg_config(fast, model="VBPR")
    _, train_data, _, _ = load_data(config)
    model = build_model(config, train_data)
    batch = next(iter(train_data))
    user, pos, neg = batch["user_id"], batch["item_id"], batch["neg_item_id"]
    u = torch.cat([model.user_embedding(user), model.user_content_embedding(user)], -1)

    def item(i):
        return torch.cat([model.item_embedding(i), model.content_projection(model.item_features[i])], -1)

    expected = 2.0 * (u.norm() + item(pos).norm() + item(neg).norm()) / len(user)
    assert model.reg_loss(batch).item() == pytest.approx(expected.item(), rel=1e-5)
    assert model.content_projection.bias is not None
