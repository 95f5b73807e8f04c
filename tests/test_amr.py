"""AMR and APR end to end: lambda = 0 is VBPR, pre-training, checkpoints, cold items, protocol."""
import torch

from recbole_robust import run_recbole_robust
from recbole_robust.quick_start import build_model, load_data, make_config
from recbole_robust.pipelines import compare_models
from recbole_robust.trainer import init_from_checkpoint

# VBPR with AMR's eq. 4 form: exactly AMR's parameters
EQ4 = {"single_user_vector": True, "item_bias": False, "embedding_size": 64, "content_embedding_size": 64,
       "reg_weight": 1e-5, "learner": "adagrad", "learning_rate": 0.05, "train_batch_size": 512}


def test_amr_with_lambda_zero_is_vbpr(fast):
    amr = run_recbole_robust(model="AMR", dataset="ml-100k", config_dict={**fast, "adv_lambda": 0.0, "adv_start_epoch": 0})
    vbpr = run_recbole_robust(model="VBPR", dataset="ml-100k", config_dict={**fast, **EQ4})
    assert amr["test_result"] == vbpr["test_result"]


def test_amr_from_vbpr_checkpoint_and_reload(fast):
    vbpr = run_recbole_robust(model="VBPR", dataset="ml-100k", config_dict={**fast, **EQ4, "epochs": 1})
    vbpr_state = torch.load(vbpr["saved_model_file"], weights_only=True)["state_dict"]

    config = make_config("AMR", "ml-100k", config_dict=fast)
    _, train_data, _, _ = load_data(config)
    model = build_model(config, train_data)
    shared, missing = init_from_checkpoint(model, vbpr["saved_model_file"])
    assert shared == sorted(vbpr_state) and missing == []
    assert all(torch.equal(model.state_dict()[k], vbpr_state[k]) for k in shared)

    amr = run_recbole_robust(model="AMR", dataset="ml-100k", config_dict={**fast, "epochs": 2},
                             pretrained=vbpr["saved_model_file"])
    checkpoint = torch.load(amr["saved_model_file"], weights_only=True)
    assert checkpoint["config"]["model"] == "AMR" and checkpoint["config"]["adv_targets"] == ["item_features"]
    model.load_state_dict(checkpoint["state_dict"])
    assert not torch.equal(model.item_embedding.weight, vbpr_state["item_embedding.weight"])


def test_amr_trains_from_pretraining_into_adversarial_stage(fast):
    from recbole_robust.registry import get_trainer

    config = make_config("AMR", "ml-100k", config_dict={**fast, "epochs": 4, "adv_start_epoch": 2})
    _, train_data, valid_data, test_data = load_data(config)
    trainer = get_trainer(config["MODEL_TYPE"], "AMR")(config, build_model(config, train_data))
    trainer.fit(train_data, valid_data)
    loss = trainer.train_loss_dict
    assert loss[1] < loss[0]  # pre-training
    assert loss[3] < loss[2]  # adversarial stage (its loss includes the perturbed term, so it jumps at epoch 2)
    assert loss[2] > loss[1]


def test_cold_items_scored_by_content_and_never_negatives(fast):
    config = make_config("AMR", "ml-100k", config_dict=fast)
    _, train_data, _, _ = load_data(config)
    model = build_model(config, train_data)
    cold = (~model.warm_items).nonzero().squeeze(1)
    cold = cold[cold > 0]
    assert len(cold) > 0  # ml-100k's random split leaves some items out of training
    gamma_i, content_i, _ = model.item_representation(cold)
    assert gamma_i.abs().sum() == 0 and content_i.abs().sum() > 0

    batch = next(iter(train_data))
    batch["neg_item_id"][:5] = cold[0]
    model.rec_loss(batch)
    assert model.warm_items[batch["neg_item_id"]].all()


def test_amr_protocol_preset_and_paired_t_test(fast):
    config = make_config("VBPR", "ml-100k", config_dict=fast, preset="amr")
    assert config["eval_args"]["split"] == {"LS": "valid_and_test"}
    assert config["test_neg_sample_args"]["sample_num"] == 999
    rows, table = compare_models(["VBPR", "AMR"], "ml-100k", config_dict={**fast, "epochs": 1}, preset="amr")
    metrics = {r["metric"] for r in rows}
    assert metrics == {f"{m}@{k}" for m in ("hit", "ndcg") for k in (5, 10, 20)}
    assert all(0 <= r["p"] <= 1 for r in rows) and "p (paired t-test)" in table


def test_apr_trains_and_beats_random(fast):
    apr = run_recbole_robust(model="APR", dataset="ml-100k", config_dict={**fast, "epochs": 3, "adv_start_epoch": 1})
    rand = run_recbole_robust(model="Random", dataset="ml-100k", config_dict={**fast, "epochs": 1})
    assert apr["test_result"]["recall@10"] > 3 * rand["test_result"]["recall@10"]
