"""The MG paper's other models (BM3, LayerGCN, SelfCF): training, scoring, graphs."""
import numpy as np
import pytest
import torch

from recbole.data.interaction import Interaction

from recbole_robust import run_recbole_robust
from recbole_robust.model.graphs import LightGCNEncoder, dropped_edges, pruned_adjacency, sym_norm_adjacency
from recbole_robust.quick_start import build_model, load_data, make_config
from recbole_robust.registry import get_trainer

SMALL = {
    "BM3": {"embedding_size": 16},
    "LayerGCN": {"embedding_size": 16, "n_layers": 2},
    "SelfCF": {"embedding_size": 16},
}


def trainer_of(fast, model, dataset="ml-100k", **config):
    config = make_config(model, dataset, config_dict={**fast, **SMALL[model], **config})
    _, train_data, valid_data, test_data = load_data(config)
    trainer = get_trainer(config["MODEL_TYPE"], model)(config, build_model(config, train_data))
    return trainer, train_data, valid_data, test_data


@pytest.mark.parametrize("model", ["BM3", "LayerGCN", "SelfCF"])
def test_model_loss_falls_and_full_sort_equals_predict(fast, model):
    trainer, train_data, valid_data, test_data = trainer_of(fast, model, "tiktok", epochs=4, learning_rate=0.01)
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


@pytest.mark.parametrize("model", ["BM3", "LayerGCN", "SelfCF"])
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
        def inter_matrix(form):
            import scipy.sparse as sp
            return sp.coo_matrix((np.ones(5), (users.numpy(), items.numpy())), shape=(3, 3))

    encoder = LightGCNEncoder(Data, n_layers=2)
    e_u, e_i = torch.randn(3, 4), torch.randn(3, 4)
    out_u, out_i = encoder(e_u, e_i)
    a = sym_norm_adjacency(users, items, 3, 3).to_dense()
    e = torch.cat([e_u, e_i])
    expected = (e + a @ e + a @ a @ e) / 3
    assert torch.allclose(torch.cat([out_u, out_i]), expected, atol=1e-6)


def test_edge_pruning_and_dropout_keep_the_requested_share():
    torch.manual_seed(0)
    users, items = torch.randint(0, 50, (400,)), torch.randint(0, 30, (400,))
    pairs = torch.unique(users * 30 + items)
    users, items = pairs // 30, pairs % 30
    graph = pruned_adjacency(users, items, 50, 30, 0.25)
    assert graph._nnz() == 2 * int(len(users) * 0.75)
    full = sym_norm_adjacency(users, items, 50, 30)
    dropped = dropped_edges(full, 0.5).coalesce()
    kept = dropped._nnz() / full._nnz()
    assert 0.4 < kept < 0.6
    # kept entries are the graph's, scaled by 1 / (1 - rate)
    dense_full, dense_dropped = full.to_dense(), dropped.to_dense()
    mask = dense_dropped != 0
    assert torch.allclose(dense_dropped[mask], dense_full[mask] * 2)


def test_layergcn_alternates_degree_sensitive_and_uniform_pruning(fast):
    trainer, _, _, _ = trainer_of(fast, "LayerGCN", dropout=0.2)
    model = trainer.model
    model.pre_epoch_processing()
    assert model.masked_adj._nnz() == 2 * int(len(model.edge_users) * 0.8)
    assert not model._degree_sensitive  # the next epoch prunes uniformly
    model.pre_epoch_processing()
    assert model._degree_sensitive


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
