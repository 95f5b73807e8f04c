"""MGCN (MMRec's model zoo): training, scoring, and its graphs against dense formulas."""
import torch
from recbole.data.interaction import Interaction

from recbole_robust import run_recbole_robust
from recbole_robust.quick_start import build_model, load_data, make_config
from recbole_robust.registry import get_trainer

SMALL = {"embedding_size": 16, "learning_rate": 0.01, "cl_loss": 0.01}


def trainer_of(fast, **config):
    config = make_config("MGCN", "tiktok", preset="mg", config_dict={**fast, **SMALL, **config})
    _, train_data, valid_data, test_data = load_data(config)
    trainer = get_trainer(config["MODEL_TYPE"], "MGCN")(config, build_model(config, train_data))
    return trainer, train_data, valid_data


def test_loss_falls_and_full_sort_equals_predict(fast):
    trainer, train_data, valid_data = trainer_of(fast, epochs=4)
    trainer.fit(train_data, valid_data)
    losses = [trainer.train_loss_dict[e] for e in range(4)]
    assert losses[-1] < losses[0]
    net = trainer.model.eval()
    users = torch.tensor([1, 2, 3])
    with torch.no_grad():
        full = net.full_sort_predict(Interaction({net.USER_ID: users})).view(len(users), -1)
        items = torch.arange(1, net.n_items)
        pairs = Interaction({net.USER_ID: users.repeat_interleave(len(items)), net.ITEM_ID: items.repeat(len(users))})
        pointwise = net.predict(pairs).view(len(users), -1)
    assert torch.allclose(full[:, 1:], pointwise, atol=1e-5)


def test_graphs_equal_the_dense_formulas(fast):
    trainer, train_data, _ = trainer_of(fast)
    net, data = trainer.model, train_data.dataset
    # each modality's item graph: the k most cosine-similar items (itself included), weighted by the similarity,
    # then D^-1/2 S D^-1/2 with D the row sums (MMRec's build_knn_normalized_graph, norm_type sym)
    features = data.item_features["image"].double()
    normed = features / features.norm(dim=1, keepdim=True).clamp_min(1e-12)
    similarity = normed @ normed.T
    top = similarity.topk(net.knn_k, dim=1)
    s = torch.zeros_like(similarity).scatter_(1, top.indices, top.values)
    d = s.sum(1).pow(-0.5)
    d[torch.isinf(d)] = 0
    expected = d[:, None] * s * d[None, :]
    assert torch.allclose(net.item_graph_image.to_dense().double(), expected, atol=1e-5)
    assert torch.equal(net.item_graph_t_image.to_dense(), net.item_graph_image.to_dense().T)
    # R: the user-item block of D^-1/2 A D^-1/2 (the MG release's degree offset 1e-7 aside)
    r = torch.from_numpy(data.inter_matrix(form="csr").toarray()).double()
    du, di = r.sum(1).pow(-0.5), r.sum(0).pow(-0.5)
    du[torch.isinf(du)], di[torch.isinf(di)] = 0, 0
    assert torch.allclose(net.user_item.to_dense().double(), du[:, None] * r * di[None, :], atol=1e-5)


def test_fusion_is_the_papers_with_two_modalities(fast):
    """MMRec's forward for image and text, written out with dense matrices, gives the same embeddings."""
    trainer, _, _ = trainer_of(fast)
    net = trainer.model.eval()
    with torch.no_grad():
        users, items, _, _ = net.views()
        ids, adj = net.item_id_embedding.weight, net.encoder.norm_adj.to_dense()
        ego = torch.cat([net.user_embedding.weight, ids])
        content = (ego + adj @ ego + adj @ adj @ ego) / 3  # two user-item layers, mean with the ego layer
        views = []
        for m in ("image", "audio"):
            h = ids * net.purifiers[m](net.projections[m](net.modality_embeddings[m].weight))
            h = getattr(net, f"item_graph_{m}").to_dense() @ h
            views.append(torch.cat([net.user_item.to_dense() @ h, h]))
        attention = torch.softmax(torch.cat([net.query(views[0]), net.query(views[1])], dim=-1), dim=-1)
        common = attention[:, :1] * views[0] + attention[:, 1:] * views[1]
        side = (net.preferences["image"](content) * (views[0] - common)
                + net.preferences["audio"](content) * (views[1] - common) + common) / 3
        expected = content + side
    assert torch.allclose(torch.cat([users, items]), expected, atol=1e-5)


def test_mgcn_beats_pop_and_trains_with_mirror_gradient(fast):
    config = {**fast, **SMALL, "epochs": 10}
    ours = run_recbole_robust(model="MGCN", dataset="tiktok", preset="mg", config_dict=config)["test_result"]
    pop = run_recbole_robust(model="Pop", dataset="tiktok", config_dict={**fast, "epochs": 1})["test_result"]
    assert ours["recall@10"] > pop["recall@10"]
    mg = run_recbole_robust(model="MGCN", dataset="tiktok", preset="mg",
                            config_dict={**config, "mirror_gradient": True})["test_result"]
    assert mg["recall@10"] > pop["recall@10"]
