"""Attacks at test time: FGM lowers a trained model's metric more than random noise; reports."""
import csv
import os

from recbole_robust import run_recbole_robust


def test_fgm_attack_on_features_and_embeddings(fast, workdir):
    result = run_recbole_robust(model="VBPR", dataset="ml-100k", config_dict={
        **fast, "epochs": 3, "attack": "fgm", "attack_eps": [0.25, 0.5], "attack_metric": "ndcg@10",
        "attack_targets": ["item_features", ["user_embedding.weight", "item_embedding.weight"]],
    })
    attack = result["attack"]
    clean = attack["clean"]["ndcg@10"]
    assert clean == result["test_result"]["ndcg@10"]
    by = {(r["target"], r["method"], r["eps"]): r["ndcg@10"] for r in attack["rows"]}
    for eps in (0.25, 0.5):
        assert by[("item_features", "fgm", eps)] < clean
        assert clean - by[("item_features", "random", eps)] < clean - by[("item_features", "fgm", eps)]
    assert by[("item_features", "fgm", 0.5)] <= by[("item_features", "fgm", 0.25)]
    # embeddings are attacked too (their effect depends on how trained the embeddings are)
    embeddings = "user_embedding.weight+item_embedding.weight"
    assert {m for (t, m, _) in by if t == embeddings} == {"fgm", "random"}
    assert by[(embeddings, "fgm", 0.5)] != by[(embeddings, "random", 0.5)]

    files = attack["files"]
    assert all(os.path.getsize(files[k]) > 0 for k in ("csv", "md", "png"))
    with open(files["csv"]) as f:
        records = list(csv.DictReader(f))
    assert len(records) == 2 * 2 * 2 * 5  # targets x methods x eps x metrics
    assert "relative drop" in open(files["md"]).read()
    with open(files["png"], "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_attack_a_saved_checkpoint_without_training(fast):
    trained = run_recbole_robust(model="VBPR", dataset="ml-100k", config_dict=fast)
    attacked = run_recbole_robust(model="VBPR", dataset="ml-100k", checkpoint=trained["saved_model_file"],
                                  config_dict={**fast, "attack": "fgm", "attack_eps": [0.5]})
    assert attacked["test_result"] == trained["test_result"]
    assert attacked["best_valid_result"] is None
    rows = attacked["attack"]["rows"]
    assert {r["method"] for r in rows} == {"fgm", "random"}
