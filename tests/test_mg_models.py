"""The MG paper's other models (BM3, DRAGON, DualGNN, LATTICE, LayerGCN, SelfCF, SLMRec) and MMRec's newer ones
(MGCN, LGMRec, PGL, SMORE, MMGCF, DAMRS, MVGAE; their own tests are in test_mmrec_models.py): training, scoring, graphs."""
import numpy as np
import pytest
import torch

from recbole.data.interaction import Interaction

from recbole_robust import run_recbole_robust
from recbole_robust.data.graphs import norm_adjacency, sampled_user_graph, user_cooccurrence_graph
from recbole_robust.model.layers import EdgeDropout, EdgePruning, LightGCNEncoder
from recbole_robust.quick_start import build_model, load_data, make_config
from recbole_robust.registry import get_trainer

SMALL = {
    "BM3": {"embedding_size": 16},
    "DRAGON": {"embedding_size": 16, "learning_rate": 0.01},
    "DualGNN": {"embedding_size": 16, "learning_rate": 0.01},
    "LATTICE": {"embedding_size": 16, "feat_embed_dim": 16},
    "LayerGCN": {"embedding_size": 16, "n_layers": 2},
    "SelfCF": {"embedding_size": 16},
    "SLMRec": {"embedding_size": 16},
    "MGCN": {"embedding_size": 16, "cl_loss": 0.01},
    "LGMRec": {"embedding_size": 16, "feat_embed_dim": 16},
    "PGL": {"embedding_size": 16, "feat_embed_dim": 16, "reg_weight": 0.1},
    "SMORE": {"embedding_size": 16, "dropout_rate": 0.1},
    "MMGCF": {"embedding_size": 16, "feat_embed_dim": 16, "reg_weight": 1e-3},
    "DAMRS": {"embedding_size": 16, "knn_k": 5, "behaviour_k": 5},
    "MVGAE": {"embedding_size": 16, "latent_size": 16},
}
MODELS = list(SMALL)


def trainer_of(fast, model, dataset="ml-100k", **config):
    config = make_config(model, dataset, config_dict={**fast, **SMALL[model], **config})
    _, train_data, valid_data, test_data = load_data(config)
    trainer = get_trainer(config["MODEL_TYPE"], model)(config, build_model(config, train_data))
    return trainer, train_data, valid_data, test_data


LOSS_EPOCHS = {"DAMRS": 8}
"""DA-MRS weighs its BPR pairs by how much the item views like them (no gradient): the weights grow as the views
learn, so its loss first rises a little before it falls."""


@pytest.mark.parametrize("model", MODELS)
def test_model_loss_falls_and_full_sort_equals_predict(fast, model):
    epochs = LOSS_EPOCHS.get(model, 4)
    trainer, train_data, valid_data, test_data = trainer_of(fast, model, "tiktok", epochs=epochs, learning_rate=0.01)
    trainer.fit(train_data, valid_data)
    losses = [trainer.train_loss_dict[e] for e in range(epochs)]
    assert losses[-1] < losses[0]
    net = trainer.model.eval()
    users = torch.tensor([1, 2, 3])
    with torch.no_grad():
        full = net.full_sort_predict(Interaction({net.USER_ID: users})).view(len(users), -1)
        items = torch.arange(1, net.n_items)
        pairs = Interaction({net.USER_ID: users.repeat_interleave(len(items)), net.ITEM_ID: items.repeat(len(users))})
        pointwise = net.predict(pairs).view(len(users), -1)
    assert torch.allclose(full[:, 1:], pointwise, atol=1e-5)


@pytest.mark.parametrize("model", MODELS)
def test_model_beats_pop(fast, model):
    """On the small TikTok-like data, whose users follow item clusters (conftest.py)."""
    config = {**fast, **SMALL[model], "epochs": 10, "learning_rate": 0.01}
    ours = run_recbole_robust(model=model, dataset="tiktok", config_dict=config)["test_result"]["recall@10"]
    pop = run_recbole_robust(model="Pop", dataset="tiktok", config_dict={**fast, "epochs": 1})["test_result"]["recall@10"]
    assert ours > pop, (ours, pop)


def test_bm3_uses_every_modality_and_trains_without_negatives(fast):
    trainer, train_data, _, _ = trainer_of(fast, "BM3", "tiktok")
    assert set(trainer.model.modality_embeddings) == {"image", "audio"}
    batch = next(iter(train_data))
    assert trainer.model.NEG_ITEM_ID not in batch.interaction


def test_mg_preset_gives_the_releases_selfcf_and_bm3_settings(fast):
    config = make_config("SelfCF", "ml-100k", config_dict=fast, preset="mg")
    assert (config["edge_dropout"], config["reg_weight"]) == (1.0, 0.1)
    assert config["train_neg_sample_args"]["distribution"] == "none"
    config = make_config("SelfCF", "ml-100k", config_dict=fast)
    assert (config["edge_dropout"], config["reg_weight"]) == (0.0, 0.0)
    config = make_config("BM3", "ml-100k", config_dict=fast, preset="mg")
    assert config["train_neg_sample_args"]["distribution"] == "none"


def test_lightgcn_encoder_equals_the_dense_formula():
    users, items = torch.tensor([0, 0, 1, 2, 2]), torch.tensor([0, 1, 1, 0, 2])

    class Data:
        user_num, item_num = 3, 3

        @staticmethod
        def norm_adjacency():
            return norm_adjacency(users, items, 3, 3).to_sparse_csr()

    encoder = LightGCNEncoder(Data, n_layers=2)
    e_u, e_i = torch.randn(3, 4), torch.randn(3, 4)
    out_u, out_i = encoder(e_u, e_i)
    r = torch.zeros(3, 3)
    r[users, items] = 1
    a = torch.cat([torch.cat([torch.zeros(3, 3), r], 1), torch.cat([r.T, torch.zeros(3, 3)], 1)])
    d = a.sum(1).pow(-0.5)
    a = d[:, None] * a * d[None, :]  # D^-1/2 A D^-1/2, dense
    e = torch.cat([e_u, e_i])
    expected = (e + a @ e + a @ a @ e) / 3
    assert torch.allclose(torch.cat([out_u, out_i]), expected, atol=1e-6)


def test_edge_pruning_and_dropout_keep_the_requested_share():
    torch.manual_seed(0)
    users, items = torch.randint(0, 50, (400,)), torch.randint(0, 30, (400,))
    pairs = torch.unique(users * 30 + items)
    users, items = pairs // 30, pairs % 30
    for degree_sensitive in (True, False):
        graph = EdgePruning(users, items, 50, 30, 0.25)(degree_sensitive)
        assert graph._nnz() == 2 * int(len(users) * 0.75)
    assert EdgePruning(users, items, 50, 30, 0.0)() is None  # no pruning: the full graph
    full = norm_adjacency(users, items, 50, 30).to_sparse_csr()
    dropped, transpose = EdgeDropout(full)(0.5)
    dense_full, dense_dropped = full.to_dense(), dropped.to_dense()
    mask = dense_dropped != 0
    assert 0.4 < mask.sum().item() / full._nnz() < 0.6
    # kept entries are the graph's, scaled by 1 / (1 - rate); the transpose is the same draw
    assert torch.allclose(dense_dropped[mask], dense_full[mask] * 2)
    assert torch.equal(transpose.to_dense(), dense_dropped.T)


def test_layergcn_alternates_degree_sensitive_and_uniform_pruning(fast):
    trainer, _, _, _ = trainer_of(fast, "LayerGCN", dropout=0.2)
    model = trainer.model
    model.pre_epoch_processing()
    assert model.masked_adj._nnz() == 2 * int(len(model.pruning.edge_users) * 0.8)
    assert not model.degree_sensitive  # the next epoch prunes uniformly
    model.pre_epoch_processing()
    assert model.degree_sensitive


def test_layergcn_layers_are_refined_by_similarity_with_the_ego_embedding(fast):
    trainer, _, _, _ = trainer_of(fast, "LayerGCN")
    model = trainer.model
    ego = torch.cat([model.user_embedding.weight, model.item_embedding.weight]).detach()
    a = model.norm_adj.to_dense()
    x, total = ego, 0
    for _ in range(model.n_layers):
        x = a @ x
        x = torch.nn.functional.cosine_similarity(x, ego, dim=-1).unsqueeze(-1) * x
        total = total + x
    users, items = model.forward()
    assert torch.allclose(torch.cat([users, items]), total, atol=1e-5)


def brute_force_cooccurrence(users, items, n_users, top):
    sets = [set(items[users == u].tolist()) for u in range(n_users)]
    rows = []
    for u in range(n_users):
        counts = [(len(sets[u] & sets[v]), v) for v in range(n_users) if v != u and sets[u] & sets[v]]
        counts.sort(key=lambda cv: (-cv[0], cv[1]))
        rows.append(counts[:top])
    return rows


def test_user_cooccurrence_graph_equals_brute_force():
    rng = np.random.default_rng(0)
    users, items = rng.integers(0, 30, 300), rng.integers(0, 40, 300)
    for top in (3, 200):
        indptr, neighbours, counts = user_cooccurrence_graph(users, items, 30, 40, top)
        expected = brute_force_cooccurrence(users, items, 30, top)
        for u in range(30):
            found = list(zip(counts[indptr[u]:indptr[u + 1]].astype(int).tolist(), neighbours[indptr[u]:indptr[u + 1]].tolist()))
            assert found == expected[u]


def test_sampled_user_graph_takes_k_neighbours_with_softmax_weights():
    indptr = np.array([0, 3, 4, 4])  # user 0: three neighbours, user 1: one, user 2: none
    neighbours = np.array([1, 2, 0, 0])
    counts = np.array([3.0, 1.0, 1.0, 1.0], dtype=np.float32)
    graph = sampled_user_graph(indptr, neighbours, counts, k=2).to_dense()
    expected_0 = torch.softmax(torch.tensor([3.0, 1.0]), 0)
    assert torch.allclose(graph[0], torch.tensor([0.0, expected_0[0], expected_0[1]]))
    assert torch.allclose(graph[1], torch.tensor([1.0, 0.0, 0.0]))  # a repeat of its only neighbour
    assert torch.equal(graph[2], torch.zeros(3))


def test_dragon_builds_its_user_graph_once_per_split_and_caches_it(fast):
    trainer, _, _, _ = trainer_of(fast, "DRAGON", "tiktok")
    model = trainer.model
    import glob
    import os
    files = glob.glob(os.path.join(trainer.config["data_path"], "graphs", "user_cooccurrence-*.npz"))
    assert len(files) == 1
    neighbours = model.user_cooccurrence_neighbours.numpy()  # a buffer: on the model's device
    with np.load(files[0], allow_pickle=False) as stored:
        assert np.array_equal(stored["neighbours"], neighbours)
    assert model.user_graph.shape == (model.n_users, model.n_users)
    assert set(model.preferences) == {"image", "audio"}
    # a damaged or foreign cache file is not trusted: recomputed and replaced
    np.savez(files[0], indptr=np.array([0, 5]), neighbours=np.array([10 ** 9] * 5), counts=np.ones(5))
    rebuilt = build_model(trainer.config, load_data(trainer.config)[1])
    assert np.array_equal(rebuilt.user_cooccurrence_neighbours.numpy(), neighbours)
    with np.load(files[0], allow_pickle=False) as stored:
        assert np.array_equal(stored["neighbours"], neighbours)


def test_lattice_learned_graph_has_gradient_on_the_first_batch_of_an_epoch_only(fast):
    trainer, train_data, _, _ = trainer_of(fast, "LATTICE", "tiktok")
    model = trainer.model
    batches = iter(train_data)
    model.pre_epoch_processing()
    for first in (True, False):
        model.zero_grad()
        model.calculate_loss(next(batches)).backward()
        grad = model.modality_projections["image"].weight.grad
        assert (grad is not None and grad.abs().sum() > 0) == first
    assert model.item_adj is not None and not model.item_adj.requires_grad


def test_lattice_item_graph_mixes_learned_and_initial_graphs(fast):
    from recbole_robust.data.graphs import normalized_sum, weighted_knn

    trainer, _, _, _ = trainer_of(fast, "LATTICE", "tiktok", lambda_coeff=1.0)
    model = trainer.model
    with torch.no_grad():
        graph = model._item_graph().to_dense()
        expected = 0
        for m in model.modalities:  # lambda 1: the initial graphs only, equal modality weights
            raw = model.modality_embeddings[m].weight  # untrained: the files' features
            indices, values = weighted_knn(raw, model.knn_k)
            expected = expected + 0.5 * normalized_sum([(1.0, indices, values)], model.n_items).to_dense()
    assert torch.allclose(graph, expected, atol=1e-6)
    row_sums = graph.sum(1)
    assert torch.all(row_sums[1:] > 0)  # row 0: the padding item, zero features


def test_weighted_knn_graph_equals_brute_force():
    from recbole_robust.data.graphs import normalized_sum, weighted_knn

    rng = np.random.default_rng(1)
    features = rng.normal(size=(25, 5)).astype(np.float32)
    k = 4
    normed = features / np.linalg.norm(features, axis=1, keepdims=True)
    similarity = normed @ normed.T
    dense = np.zeros((25, 25))
    for i in range(25):
        top = np.argsort(-similarity[i], kind="stable")[:k]
        dense[i, top] = similarity[i, top]
    d = dense.sum(1) ** -0.5
    expected = dense * d[:, None] * d[None, :]
    indices, values = weighted_knn(torch.from_numpy(features), k, block_size=6)
    found = normalized_sum([(1.0, indices, values)], 25).to_dense().numpy()
    assert np.allclose(found, expected, atol=1e-5)


def test_slmrec_propagates_its_views_together_as_each_alone(fast):
    """SLMRec's ID and modality views share one graph: one product of their columns equals one per view."""
    trainer, _, _, _ = trainer_of(fast, "SLMRec", "tiktok")
    net = trainer.model
    assert list(net.modality_projections) == ["image", "audio"]
    with torch.no_grad():
        users, items = net.views()
        d = net.embedding_size
        views = [net.item_embedding.weight] + [net.dense[m](getattr(net, f"features_{m}")) for m in net.modalities]
        for k, view in enumerate(views):
            u, i = net.encoder(net.user_embedding.weight, view)
            assert torch.allclose(users[:, k * d:(k + 1) * d], u, atol=1e-6)
            assert torch.allclose(items[:, k * d:(k + 1) * d], i, atol=1e-6)
