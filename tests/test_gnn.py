"""Multimodal GNNs (MMGCN, GRCN, FREEDOM) and their graphs."""
import numpy as np
import pytest
import torch

from recbole_robust import run_recbole_robust
from recbole_robust.data.graphs import knn_graph, knn_neighbours, norm_adjacency, sym_norm
from recbole_robust.quick_start import build_model, load_data, make_config
from recbole_robust.registry import get_trainer

SMALL = {
    "MMGCN": {"embedding_size": 16, "latent_size": 16, "n_layers": 2},
    "GRCN": {"embedding_size": 16, "latent_size": 16, "n_routing": 2},
    "FREEDOM": {"embedding_size": 16, "feat_embed_dim": 16},
}


def test_knn_graph_matches_brute_force():
    rng = np.random.default_rng(0)
    features = rng.normal(size=(40, 6)).astype(np.float32)
    k = 4
    normed = features / np.linalg.norm(features, axis=1, keepdims=True)
    similarity = normed @ normed.T
    expected = np.argsort(-similarity, axis=1, kind="stable")[:, :k]
    found = knn_neighbours(torch.from_numpy(features), k, block_size=7).numpy()  # several row blocks
    assert all(set(found[i]) == set(expected[i]) for i in range(40))
    graph = knn_graph(torch.from_numpy(features), k).to_dense().numpy()
    dense = np.zeros((40, 40))
    for i in range(40):
        dense[i, expected[i]] = 1.0 / k  # out-degree k on both sides: d^-1/2 d^-1/2 = 1/k
    assert np.allclose(graph, dense, atol=1e-6)


def test_normalised_adjacency_matches_dense_formula():
    users, items = torch.tensor([0, 0, 1, 2]), torch.tensor([0, 1, 1, 1])
    adj = norm_adjacency(users, items, 3, 2).to_dense().numpy()
    a = np.zeros((5, 5))
    for u, i in zip(users.tolist(), items.tolist()):
        a[u, 3 + i] = a[3 + i, u] = 1
    d = a.sum(1)
    expected = a / np.sqrt(np.outer(d, d))
    assert np.allclose(adj, expected, atol=1e-6)


def test_one_symmetric_normalisation_for_bipartite_square_and_weighted_graphs():
    rng = np.random.default_rng(1)
    rows, cols = torch.from_numpy(rng.integers(0, 6, 20)), torch.from_numpy(rng.integers(0, 4, 20))
    pairs = torch.unique(rows * 4 + cols)
    rows, cols = pairs // 4, pairs % 4
    weights = torch.from_numpy(rng.uniform(0.1, 1.0, len(rows))).float()
    for values in (None, weights):
        a = np.zeros((6, 4))
        a[rows.numpy(), cols.numpy()] = 1.0 if values is None else values.numpy()
        found = np.zeros((6, 4))
        found[rows.numpy(), cols.numpy()] = sym_norm(rows, cols, 6, 4, values=values).numpy()
        d_r, d_c = a.sum(1), a.sum(0)
        with np.errstate(divide="ignore"):
            expected = np.nan_to_num(a / np.sqrt(np.outer(d_r, d_c)), posinf=0.0)
        assert np.allclose(found, expected, atol=1e-6)  # bipartite: rows and columns have degrees of their own
    square = np.zeros((6, 6))
    square[rows.numpy(), cols.numpy()] = weights.numpy()
    found = np.zeros((6, 6))
    found[rows.numpy(), cols.numpy()] = sym_norm(rows, cols, 6, values=weights).numpy()
    d = square.sum(1)  # square: the row sums on both sides (a kNN row lists the node's neighbours)
    with np.errstate(divide="ignore"):
        inv = np.where(d > 0, d ** -0.5, 0.0)
    assert np.allclose(found, inv[:, None] * square * inv[None, :], atol=1e-6)


def test_each_split_builds_its_own_graphs(fast):
    config = make_config("FREEDOM", "ml-100k", config_dict={**fast, **SMALL["FREEDOM"]})
    dataset, train_data, valid_data, _ = load_data(config)
    train, valid = train_data.dataset, valid_data.dataset
    assert train.norm_adjacency() is train.norm_adjacency()  # built once per split
    users, items = train.interaction_edges()
    assert len(users) == len(train.inter_feat)  # the training interactions only
    assert valid.interaction_edges()[0].shape != users.shape  # a split's graphs are its own
    model = build_model(config, train_data)
    assert model.encoder.norm_adj._nnz() == 2 * len(users)


@pytest.mark.parametrize("model", ["MMGCN", "GRCN", "FREEDOM"])
def test_gnn_trains_and_beats_random(fast, model):
    config_dict = {**fast, **SMALL[model], "epochs": 3, "train_batch_size": 8192, "learning_rate": 0.005}
    if model == "FREEDOM":
        config_dict["modality_weights"] = None  # the MG preset weighs an image modality, ml-100k has none
    config = make_config(model, "ml-100k", config_dict=config_dict, preset="mg")
    _, train_data, valid_data, test_data = load_data(config)
    trainer = get_trainer(config["MODEL_TYPE"], model)(config, build_model(config, train_data))
    trainer.fit(train_data, valid_data)
    losses = [trainer.train_loss_dict[e] for e in range(3)]
    assert losses[2] < losses[0]
    result = trainer.evaluate(test_data)
    random_result = run_recbole_robust(model="Random", dataset="ml-100k", preset="mg", config_dict={**fast, "epochs": 1})
    assert result["recall@20"] > 2 * random_result["test_result"]["recall@20"]


def test_gnns_use_every_modality(fast):
    config = make_config("GRCN", "tiktok", config_dict={**fast, **SMALL["GRCN"]})
    _, train_data, _, _ = load_data(config)
    model = build_model(config, train_data)
    assert set(model.content_graphs) == {"image", "audio"}
    config = make_config("FREEDOM", "tiktok", config_dict={**fast, **SMALL["FREEDOM"], "modality_weights": {"image": 0.1}})
    model = build_model(config, train_data)
    assert model.modality_weights == pytest.approx({"image": 0.1, "audio": 0.9})
    assert model.mm_adj.shape == (model.n_items, model.n_items)


def test_freedom_prunes_edges_each_epoch(fast):
    config = make_config("FREEDOM", "ml-100k", config_dict={**fast, **SMALL["FREEDOM"], "dropout": 0.5})
    _, train_data, _, _ = load_data(config)
    model = build_model(config, train_data)
    model.pre_epoch_processing()
    kept = model.masked_adj._nnz() // 2
    assert kept == int(len(model.pruning.edge_users) * 0.5)
    assert model.encoder.norm_adj._nnz() // 2 == len(model.pruning.edge_users)


def test_freedom_information_adjustment_rebuilds_its_item_item_graph(fast):
    """FREEDOM uses its features at inference only through the frozen kNN graph built from them:
    adjusting features must rebuild that graph (else the adjustment could not change any ranking)."""
    result = run_recbole_robust(model="FREEDOM", dataset="ml-100k", preset="mg", config_dict={
        **fast, **SMALL["FREEDOM"], "modality_weights": None, "train_batch_size": 8192, "analysis": ["adjust"],
        "adjust_fraction": 0.3, "adjust_modality": "text"})
    adjust = result["analyses"]["adjust"].data
    clean, adjusted = adjust["clean"], adjust["draws"][0]
    assert {m: v[0] for m, v in adjusted.items()} != dict(clean)

    config = make_config("FREEDOM", "ml-100k", config_dict={**fast, **SMALL["FREEDOM"], "modality_weights": None},
                         preset="mg")
    _, train_data, _, _ = load_data(config)
    model = build_model(config, train_data)
    items, donors = torch.arange(1, 101), torch.arange(201, 301)
    tensors = model.adjusted_features("text", items, donors)
    raw = model.features_text.clone()
    raw[items] = raw[donors]
    expected = 0.5 * knn_graph(raw, model.knn_k) + 0.5 * knn_graph(model.features_genre, model.knn_k)
    assert torch.allclose(tensors["mm_adj"].to_dense(), expected.to_dense(), atol=1e-6)
    assert not torch.allclose(tensors["mm_adj"].to_dense(), model.mm_adj.to_dense())
    assert torch.equal(tensors["modality_embeddings.text.weight"][items], model.modality_embeddings.text.weight[donors])


def test_sparse_mean_aggregation_equals_message_passing():
    """MMGCN's CSR mean aggregation gives what PyG's scatter-mean message passing gave, on a small graph
    with an isolated node, forward and backward."""
    from torch_geometric.utils import scatter

    from recbole_robust.data.graphs import csr_transpose, mean_adjacency
    from recbole_robust.model.layers import SparseMeanConv

    torch.manual_seed(0)
    edges = torch.tensor([[0, 0, 1, 2, 3], [4, 5, 4, 5, 5]])
    edge_index = torch.cat([edges, edges.flip(0)], dim=1)  # node 6 has no edge
    x = torch.randn(7, 3, requires_grad=True)
    conv = SparseMeanConv(3, 2)
    adjacency = mean_adjacency(edge_index, 7)
    ours = conv(x, adjacency, csr_transpose(adjacency))
    messages = (x @ conv.weight)[edge_index[0]]
    reference = scatter(messages, edge_index[1], dim=0, dim_size=7, reduce="mean")
    assert torch.allclose(ours, reference, atol=1e-6) and torch.equal(ours[6], torch.zeros(2))
    grad_ours = torch.autograd.grad(ours.square().sum(), x)[0]
    grad_reference = torch.autograd.grad(reference.square().sum(), x)[0]
    assert torch.allclose(grad_ours, grad_reference, atol=1e-6)


@pytest.mark.parametrize("options", [
    {"concat": False, "train_id_embedding": True},
    {"concat": True, "train_id_embedding": False, "latent_size": {"image": 16}},  # the MG preset's form
])
def test_mmgcn_layers_equal_the_papers_equations(fast, options):
    """MMGCN's fast path (row blocks, split combination weights, CSR products) gives the scores and
    gradients of its equations written plainly: normalised [preference; item features], dense mean
    adjacency, [h, x_hat] concatenated before the combination layer."""
    import torch.nn.functional as F

    config = make_config("MMGCN", "tiktok", config_dict={**fast, **SMALL["MMGCN"], **options})
    _, train_data, _, _ = load_data(config)
    model = build_model(config, train_data)
    mean_adj = model.mean_adj.to_dense()

    def plain(gcn, features):
        items = gcn.projection(features) if gcn.projection is not None else features
        x = F.normalize(torch.cat([gcn.preference, items]))
        for conv, linear, combine in zip(gcn.convs, gcn.linears, gcn.combines):
            h = F.leaky_relu(mean_adj @ (x @ conv.weight))
            x_hat = F.leaky_relu(linear(x)) + model.id_embedding
            x = F.leaky_relu(combine(torch.cat([h, x_hat], -1)) if options["concat"] else combine(h) + x_hat)
        return x

    reference = torch.stack([plain(model.gcns[m], getattr(model, f"features_{m}")) for m in model.modalities]).mean(0)
    ours = model.forward()
    assert torch.allclose(ours, reference, atol=1e-5)
    weights = torch.randn_like(ours)
    params = [p for p in model.parameters() if p.requires_grad]
    grads_ours = torch.autograd.grad((ours * weights).sum(), params)
    grads_reference = torch.autograd.grad((reference * weights).sum(), params)
    assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(grads_ours, grads_reference))
    assert model.gcns["image"].preference.requires_grad == options["train_id_embedding"]
