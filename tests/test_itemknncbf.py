"""ItemKNNCBF (content-based item kNN, MMRec's baseline): its graph against a dense reference, full-sort scores
against predict, and a run through RecBole's loop."""
import numpy as np
import torch
from recbole.data.interaction import Interaction

from recbole_robust.data.graphs import shrunk_knn
from recbole_robust.quick_start import build_model, load_data, make_config, run_recbole_robust


def test_shrunk_knn_equals_the_dense_formula():
    features = torch.randn(57, 6)
    graph = shrunk_knn(features, 4, 2.5, block_size=10).toarray()
    norms = features.norm(dim=1)
    dense = (features @ features.T) / (norms[:, None] * norms[None, :] + 2.5)
    top = dense.topk(4, dim=1)
    reference = torch.zeros_like(dense).scatter_(1, top.indices, top.values).numpy()
    np.testing.assert_allclose(graph, reference, rtol=1e-6, atol=1e-7)
    assert ((graph != 0).sum(1) == 4).all()


def test_full_sort_scores_equal_predict_and_the_formula(fast):
    config = make_config("ItemKNNCBF", "tiktok", config_dict=fast, preset="mg")
    _, train, _, _ = load_data(config)
    model = build_model(config, train)
    users = torch.tensor([1, 5, 17])
    full = model.full_sort_predict(Interaction({model.USER_ID: users})).view(len(users), -1)
    items = torch.tensor([3, 40, 199])
    pairs = Interaction({model.USER_ID: users.repeat_interleave(3), model.ITEM_ID: items.repeat(3)})
    torch.testing.assert_close(model.predict(pairs).view(3, 3), full[:, items])
    features = train.dataset.item_features.concat(model.modalities).float()
    similarity = torch.from_numpy(shrunk_knn(features, config["knn_k"], config["shrink"]).toarray())
    history = torch.from_numpy(train.dataset.inter_matrix(form="csr")[users.numpy()].toarray()).float()
    torch.testing.assert_close(full, history @ similarity)  # a user's score: the sum of her items' similarities


def test_runs_through_recbole_loop_deterministically(fast):
    first = run_recbole_robust("ItemKNNCBF", "tiktok", preset="mg", config_dict=fast, saved=False)
    again = run_recbole_robust("ItemKNNCBF", "tiktok", preset="mg", saved=False,
                               config_dict={**fast, "mirror_gradient": True, "seed": 7})
    assert first["test_result"] == again["test_result"]  # nothing learned: seeds and MG change nothing
    assert first["test_result"]["recall@20"] > 0.1  # the small data's items cluster by content
