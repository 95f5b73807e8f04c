"""Full-ranking evaluation: users per batch from a memory budget, vectorised batches equal RecBole's,
the MG preset's training-only mask, graph models propagate once per evaluation."""
import numpy as np
import pytest
import torch
from recbole.data.dataloader import FullSortEvalDataLoader

from recbole_robust.data.dataloader import BudgetFullSortEvalDataLoader, users_per_batch
from recbole_robust.quick_start import build_model, load_data, make_config
from recbole_robust.registry import get_trainer


def pairs(rows, items, users):
    return sorted(zip(users[rows].tolist(), items.tolist()))


def test_batches_equal_recboles_and_follow_the_memory_budget(fast):
    config = make_config("BPR", "ml-100k", config_dict={**fast, "eval_memory_mb": 1})
    _, _, valid_data, test_data = load_data(config)
    assert isinstance(test_data, BudgetFullSortEvalDataLoader)
    assert test_data.step == users_per_batch(1, test_data._dataset.item_num) == 2**20 // (1683 * 16)
    index = list(range(0, len(test_data.user_df), 7))
    ours = test_data.collate_fn(index)
    recbole = FullSortEvalDataLoader.collate_fn(test_data, index)
    users = ours[0]["user_id"]
    assert torch.equal(users, recbole[0]["user_id"])
    assert pairs(*ours[1], users) == pairs(*recbole[1], users)  # history (masked items)
    assert pairs(ours[2], ours[3], users) == pairs(recbole[2], recbole[3], users)  # positives


def test_metrics_do_not_depend_on_the_budget(fast):
    results = []
    for budget in (0.05, 512):
        config = make_config("BPR", "ml-100k", config_dict={**fast, "eval_memory_mb": budget, "epochs": 1})
        _, train_data, valid_data, test_data = load_data(config)
        trainer = get_trainer(config["MODEL_TYPE"], "BPR")(config, build_model(config, train_data))
        trainer.fit(train_data, valid_data, saved=False)
        results.append(trainer.evaluate(test_data, load_best_model=False))
    assert results[0] == pytest.approx(results[1], abs=1e-12)
    assert len(results[0]) == 5


def test_mg_preset_masks_only_training_items_at_test(fast):
    config = make_config("BPR", "tiktok", config_dict=fast, preset="mg")
    assert config["history_items"] == "train"
    _, train_data, valid_data, test_data = load_data(config)
    users = test_data.user_df["user_id"]
    rows, items = test_data.collate_fn(list(range(len(users))))[1]
    masked = set(pairs(rows, items, users))
    train = train_data.dataset.inter_feat
    assert masked == set(zip(train["user_id"].tolist(), train["item_id"].tolist())) & {
        (u, i) for u, i in masked}
    valid = valid_data.dataset.inter_feat
    valid_pairs = set(zip(valid["user_id"].tolist(), valid["item_id"].tolist()))
    assert not masked & valid_pairs and len(masked) == int(np.isin(train["user_id"].numpy(), users.numpy()).sum())


@pytest.mark.parametrize("mode", ["full", "uni20"])
def test_graph_model_propagates_once_per_evaluation(fast, mode):
    config = make_config("FREEDOM", "tiktok", config_dict={
        **fast, "eval_args": {"split": {"RS": [0.8, 0.1, 0.1]}, "order": "RO", "group_by": "user", "mode": mode},
        "eval_memory_mb": 0.05, "eval_batch_size": 64, "benchmark_filename": None})
    _, train_data, valid_data, test_data = load_data(config)
    model = build_model(config, train_data)
    trainer = get_trainer(config["MODEL_TYPE"], "FREEDOM")(config, model)
    calls = []
    forward = model.forward
    model.forward = lambda *a: (calls.append(1), forward(*a))[1]
    assert len(test_data) > 1
    trainer.evaluate(test_data, load_best_model=False)
    assert len(calls) == 1


def test_mg_preset_draws_negatives_among_training_items(fast, tmp_path):
    """The release samples training negatives among the items of the training split; RecBole among all
    items (then items seen only in valid/test are negatives)."""
    import shutil
    from pathlib import Path

    from recbole_robust.data.dataloader import TrainingItemsTrainDataLoader

    shutil.copytree(Path(fast["data_path"]) / "tiktok", tmp_path / "tiktok")
    inter = tmp_path / "tiktok" / "tiktok.inter"
    header, *lines = inter.read_text().splitlines()
    held_out = {"3", "4", "5"}  # items whose training interactions become validation interactions
    lines = ["\t".join(f[:2] + ["1" if f[1] in held_out else f[2]]) for f in (l.split("\t") for l in lines)]
    inter.write_text("\r\n".join([header] + lines) + "\r\n")
    fast = {**fast, "data_path": str(tmp_path), "build_dir": str(tmp_path / "build")}
    config = make_config("BPR", "tiktok", config_dict=fast, preset="mg")
    assert config["negatives_from"] == "train"
    _, train_data, valid_data, _ = load_data(config)
    assert isinstance(train_data, TrainingItemsTrainDataLoader)
    train = train_data.dataset.inter_feat
    training_items = set(train["item_id"].tolist())
    held_out_only = set(valid_data.dataset.inter_feat["item_id"].tolist()) - training_items
    assert held_out_only  # the generated TikTok has items that occur in valid/test only
    history = {}
    for u, i in zip(train["user_id"].tolist(), train["item_id"].tolist()):
        history.setdefault(u, set()).add(i)
    negatives = []
    for _ in range(3):
        for batch in train_data:
            pairs = zip(batch["user_id"].tolist(), batch["neg_item_id"].tolist())
            assert all(i not in history[u] for u, i in pairs)  # never a positive of the user
            negatives += batch["neg_item_id"].tolist()
    assert set(negatives) <= training_items and len(set(negatives)) > 0.9 * len(training_items)

    plain = make_config("BPR", "tiktok", config_dict=fast)
    _, plain_train, _, _ = load_data(plain)
    assert not isinstance(plain_train, TrainingItemsTrainDataLoader)
    assert set().union(*(set(b["neg_item_id"].tolist()) for _ in range(3) for b in plain_train)) & held_out_only
