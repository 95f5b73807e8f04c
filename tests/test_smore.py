"""SMORE (MMRec's model zoo): training, scoring, max-pooled graphs and MMRec's forward written out."""
import torch
from recbole.data.interaction import Interaction

from recbole_robust.model.general_recommender.smore import max_pool
from recbole_robust.quick_start import build_model, load_data, make_config
from recbole_robust.registry import get_trainer

SMALL = {"embedding_size": 16, "learning_rate": 0.01, "dropout_rate": 0.1}


def trainer_of(fast, **config):
    config = make_config("SMORE", "tiktok", preset="mg", config_dict={**fast, **SMALL, **config})
    _, train_data, valid_data, _ = load_data(config)
    trainer = get_trainer(config["MODEL_TYPE"], "SMORE")(config, build_model(config, train_data))
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


def test_max_pool_is_the_elementwise_maximum_over_the_union_of_edges():
    a = torch.tensor([[0.0, 0.5, 0.0], [0.2, 0.0, 0.0], [0.0, 0.0, 0.3]])
    b = torch.tensor([[0.0, 0.1, 0.4], [0.6, 0.0, 0.0], [0.0, 0.0, 0.0]])
    pooled = max_pool([a.to_sparse_csr(), b.to_sparse_csr()]).to_dense()
    assert torch.equal(pooled, torch.maximum(a, b))


def test_forward_equals_mmrecs_written_out(fast):
    """MMRec's SMORE.forward for image and text (evaluation: no dropout), with dense matrices."""
    trainer, _, _ = trainer_of(fast)
    net = trainer.model.eval()
    with torch.no_grad():
        users, items, _, _ = net.views()
        ids, d = net.item_id_embedding.weight, net.embedding_size
        adj = net.encoder.norm_adj.to_dense()
        ego = torch.cat([net.user_embedding.weight, ids])
        content = sum(torch.linalg.matrix_power(adj, k) @ ego for k in range(4)) / 4  # 3 layers and the ego layer
        image = net.projections["image"](net.modality_embeddings["image"].weight)
        text = net.projections["audio"](net.modality_embeddings["audio"].weight)
        image_fft, text_fft = (torch.fft.rfft(x, dim=1, norm="ortho") for x in (image, text))
        weight = {p: torch.view_as_complex(net.filters[p]) for p in ("image", "audio", "fusion")}
        conv = {"image": torch.fft.irfft(image_fft * weight["image"], n=d, dim=1, norm="ortho"),
                "audio": torch.fft.irfft(text_fft * weight["audio"], n=d, dim=1, norm="ortho"),
                "fusion": torch.fft.irfft(text_fft * image_fft * weight["fusion"], n=d, dim=1, norm="ortho")}
        view = {}
        for p in ("image", "audio", "fusion"):
            h = getattr(net, f"item_graph_{p}").to_dense() @ (ids * net.purifiers[p](conv[p]))
            view[p] = torch.cat([net.user_item.to_dense() @ h, h])
        agg_image = torch.softmax(net.queries["image"](view["fusion"]), dim=-1) * view["image"]
        agg_text = torch.softmax(net.queries["audio"](view["fusion"]), dim=-1) * view["audio"]
        side = torch.stack([net.preferences["image"](content) * agg_image, net.preferences["audio"](content) * agg_text,
                            net.preferences["fusion"](content) * view["fusion"]]).mean(0)
        expected = content + side
    assert torch.allclose(torch.cat([users, items]), expected, atol=1e-5)
