"""Attacks at test time: FGM lowers a trained model's metric more than random noise; reports."""
import csv
import os

import pytest

from recbole_robust import run_recbole_robust


def test_fgm_attack_on_features_and_embeddings(fast, workdir):
    result = run_recbole_robust(model="VBPR", dataset="ml-100k", config_dict={
        **fast, "epochs": 3, "attack": "fgm", "attack_eps": [0.25, 0.5], "attack_metric": "ndcg@10",
        "attack_targets": ["item_features", ["user_embedding.weight", "item_embedding.weight"]],
    })
    attack = result["analyses"]["attack"]
    clean = attack.data["clean"]["ndcg@10"]
    assert round(clean, 4) == result["test_result"]["ndcg@10"]  # RecBole's, unrounded
    by = {(r["target"], r["method"], r["eps"]): r["ndcg@10"] for r in attack.data["rows"]}
    for eps in (0.25, 0.5):
        assert by[("item_features", "fgm", eps)] < clean
        assert clean - by[("item_features", "random", eps)] < clean - by[("item_features", "fgm", eps)]
    assert by[("item_features", "fgm", 0.5)] <= by[("item_features", "fgm", 0.25)]
    # embeddings are attacked too (their effect depends on how trained the embeddings are)
    embeddings = "user_embedding.weight+item_embedding.weight"
    assert {m for (t, m, _) in by if t == embeddings} == {"fgm", "random"}
    assert by[(embeddings, "fgm", 0.5)] != by[(embeddings, "random", 0.5)]

    files = attack.files
    assert all(os.path.getsize(files[k]) > 0 for k in ("csv", "md", "tex", "png"))
    with open(files["csv"]) as f:
        records = list(csv.DictReader(f))
    assert len(records) == 2 * 2 * 2 * 5  # targets x methods x eps x metrics
    assert all(float(r["relative_drop"]) == (float(r["clean"]) - float(r["attacked"])) / float(r["clean"])
               for r in records)  # one value a cell, at full precision
    assert "relative drop" in open(files["md"]).read() and "\\toprule" in open(files["tex"]).read()
    with open(files["png"], "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_attack_a_saved_checkpoint_without_training(fast):
    trained = run_recbole_robust(model="VBPR", dataset="ml-100k", config_dict=fast)
    attacked = run_recbole_robust(model="VBPR", dataset="ml-100k", checkpoint=trained["saved_model_file"],
                                  config_dict={**fast, "attack": "fgm", "attack_eps": [0.5]})
    assert attacked["test_result"] == trained["test_result"]
    assert attacked["best_valid_result"] is None
    rows = attacked["analyses"]["attack"].data["rows"]
    assert {r["method"] for r in rows} == {"fgm", "random"}


def test_pgd_beats_fgm_where_the_loss_is_curved_and_stays_in_the_ball(fast):
    import torch

    from recbole_robust.perturb.ascent import attack_perturbations, training_gradients
    from recbole_robust.robustness.attacks import attack_sweep
    from recbole_robust.perturb.engine import call_with, named_tensor, perturbation, rec_loss_fn

    from recbole_robust.quick_start import prepare_run

    _, _, (train_data, valid_data, test_data), trainer = prepare_run("VBPR", "ml-100k", config_dict={**fast, "epochs": 3})
    trainer.fit(train_data, valid_data)
    model = trainer.model
    # user and item embeddings together (APR's target): the score is bilinear in them, so one linearised
    # step (FGM) can even lower the training loss and help the ranking; PGD's steps follow the curvature
    embeddings = [(["user_embedding.weight", "item_embedding.weight"], ["row", "row"])]
    clean, rows = attack_sweep(trainer, train_data, test_data, [0.5], ("fgm", "pgd"), terms=embeddings,
                               pgd={"steps": 10, "step_size": None, "random_start": False})
    by = {r["method"]: r["ndcg@10"] for r in rows}
    assert by["pgd"] < 0.7 * clean["ndcg@10"] and by["pgd"] < by["fgm"]

    # on the item features (nearly linear in the score) PGD ends where the training loss is at least FGM's
    terms = [(["item_features"], ["row"])]
    batches = list(train_data)
    loss_fn = rec_loss_fn(model)

    def training_loss(tensors):
        torch.manual_seed(0)
        with torch.no_grad():
            return sum(float(call_with(model, tensors, loss_fn, b)) for b in batches)

    torch.manual_seed(0)
    fgm_point = attack_perturbations(model, batches, terms, 0.5, "fgm")
    torch.manual_seed(0)
    pgd_point = attack_perturbations(model, batches, terms, 0.5, "pgd", {"steps": 5, "step_size": 0.5})
    assert training_loss(pgd_point) >= training_loss(fgm_point) > training_loss({})

    base = named_tensor(model, "item_features").detach()
    for random_start in (False, True):
        pgd = {"steps": 3, "step_size": 0.6, "random_start": random_start}
        delta = attack_perturbations(model, train_data, terms, 0.5, "pgd", pgd)["item_features"] - base
        norms = delta.norm(dim=1)
        assert norms.max() <= 0.5 + 1e-5 and norms.max() > 0.49
    # one step of the full norm from 0 is FGM (on the same batches and seed: the same negatives; VBPR
    # replaces cold negatives at random in every pass)
    batches = list(train_data)
    torch.manual_seed(0)
    fgm = perturbation(training_gradients(model, batches, ["item_features"])["item_features"], 0.5, "row")
    torch.manual_seed(0)
    one_step = attack_perturbations(model, batches, terms, 0.5, "pgd", {"steps": 1, "step_size": 1.0})
    assert torch.allclose(one_step["item_features"] - base, fgm, atol=1e-5)


def test_robustness_during_training_is_logged_and_leaves_training_unchanged(fast):
    from recbole_robust.quick_start import prepare_run

    runs = {}
    for name, extra in (("plain", {}), ("attacked", {"valid_attack": "fgm", "valid_attack_eps": 1.0})):
        config, _, (train_data, valid_data, _), trainer = prepare_run(
            "VBPR", "ml-100k", config_dict={**fast, "epochs": 3, **extra})
        scores = {}
        trainer.fit(train_data, valid_data, callback_fn=lambda epoch, score: scores.__setitem__(epoch, score))
        runs[name] = (trainer, scores)
    (plain, plain_scores), (attacked, attacked_scores) = runs["plain"], runs["attacked"]
    # the attack's gradient pass restores the loader and random states: training is the same
    assert attacked.train_loss_dict == plain.train_loss_dict
    assert attacked_scores == plain_scores
    assert plain.attacked_valid_results == {}
    metric = config["valid_metric"].lower()
    assert sorted(attacked.attacked_valid_results) == [0, 1, 2]
    for epoch, result in attacked.attacked_valid_results.items():
        assert result[metric] < attacked_scores[epoch]


@pytest.mark.parametrize("model, promotable", [
    ("VBPR", True), ("AMR", True), ("MMGCN", True), ("GRCN", True), ("LATTICE", True), ("DualGNN", True),
    ("DRAGON", True), ("SLMRec", True), ("FREEDOM", False), ("BM3", False)])
def test_promotion_needs_features_that_reach_the_score(fast, model, promotable):
    from recbole_robust.errors import RecBoleRobustError
    from recbole_robust.quick_start import build_model, load_data, make_config
    from recbole_robust.robustness.analyses.promotion import content_tensors

    config = make_config(model, "tiktok", config_dict=fast, preset="mg")
    _, train_data, _, _ = load_data(config)
    net = build_model(config, train_data)
    if promotable:
        assert content_tensors(net)
    else:  # FREEDOM: features only build its frozen kNN graph; BM3: only its training loss
        with pytest.raises(RecBoleRobustError, match=f"{model}'s scores do not depend on its item content features"):
            content_tensors(net)


def test_promotion_raises_the_targets_and_rank_change_reports_the_fall(fast):
    result = run_recbole_robust(model="VBPR", dataset="ml-100k", config_dict={
        **fast, "epochs": 3, "analysis": ["promotion", "rank_change"], "promotion_items": 10,
        "promotion_eps": [1.0, 4.0], "attack_steps": 5, "attack_eps": [1.0], "promotion_topk": 20,
    })
    rows = {(r["method"], r["eps"]): r for r in result["analyses"]["promotion"].data["rows"]}
    clean = rows[("clean", 0.0)]
    for eps in (1.0, 4.0):
        pgd, noise = rows[("pgd", eps)], rows[("random", eps)]
        assert pgd["mean_rank"] < clean["mean_rank"] and pgd["mean_rank"] < noise["mean_rank"]
        assert pgd["hit_ratio@20"] >= clean["hit_ratio@20"]
    assert rows[("pgd", 4.0)]["hit_ratio@20"] > clean["hit_ratio@20"]
    assert rows[("pgd", 4.0)]["mean_rank"] < rows[("pgd", 1.0)]["mean_rank"]

    change = result["analyses"]["rank_change"]
    before, after = change.data["before"], change.data["after"]
    assert len(before) == len(after) > 0 and (before >= 1).all()
    assert (after - before).mean() > 0  # FGM on the features pushes the clean test items down
    assert all(os.path.getsize(p) > 0 for p in change.files.values())
    assert os.path.getsize(result["analyses"]["promotion"].files["png"]) > 0
