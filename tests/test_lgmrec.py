"""LGMRec (MMRec's model zoo): training, scoring, its graphs, and MMRec's forward written out."""
import torch
import torch.nn.functional as F
from recbole.data.interaction import Interaction

from recbole_robust.quick_start import build_model, load_data, make_config
from recbole_robust.registry import get_trainer

SMALL = {"embedding_size": 16, "feat_embed_dim": 16, "learning_rate": 0.01}


def trainer_of(fast, **config):
    config = make_config("LGMRec", "tiktok", preset="mg", config_dict={**fast, **SMALL, **config})
    _, train_data, valid_data, _ = load_data(config)
    trainer = get_trainer(config["MODEL_TYPE"], "LGMRec")(config, build_model(config, train_data))
    return trainer, train_data, valid_data


def test_loss_falls_and_full_sort_equals_predict(fast):
    trainer, train_data, valid_data = trainer_of(fast, epochs=4)
    trainer.fit(train_data, valid_data)
    losses = [trainer.train_loss_dict[e] for e in range(4)]
    assert losses[-1] < losses[0]
    net = trainer.model.eval()
    users = torch.tensor([1, 2, 3])
    with torch.no_grad():  # one propagation (and one Gumbel draw) per evaluation, shared by both
        full = net.full_sort_predict(Interaction({net.USER_ID: users})).view(len(users), -1)
        items = torch.arange(1, net.n_items)
        pairs = Interaction({net.USER_ID: users.repeat_interleave(len(items)), net.ITEM_ID: items.repeat(len(users))})
        pointwise = net.predict(pairs).view(len(users), -1)
    assert torch.allclose(full[:, 1:], pointwise, atol=1e-5)


def test_forward_equals_mmrecs_written_out(fast):
    """MMRec's LGMRec.forward for image and text with dense matrices, the same Gumbel draws (evaluation: no dropout)."""
    trainer, train_data, _ = trainer_of(fast)
    net, data = trainer.model.eval(), train_data.dataset
    r = torch.from_numpy(data.inter_matrix(form="csr").toarray()).float()
    n_u = net.n_users
    a = torch.zeros(n_u + net.n_items, n_u + net.n_items)
    a[:n_u, n_u:], a[n_u:, :n_u] = r, r.T
    d = ((a > 0).sum(1) + 1e-7).pow(-0.5)
    adj = d[:, None] * a * d[None, :]
    with torch.no_grad():
        torch.manual_seed(3)
        users, items, _ = net.views()
        torch.manual_seed(3)
        hyper = {}
        for m in ("image", "audio"):
            features = getattr(net, f"features_{m}")
            i_h = features @ net.hyperedges[m]
            u_h = r @ i_h
            hyper[m] = (F.gumbel_softmax(i_h, 0.2, dim=1), F.gumbel_softmax(u_h, 0.2, dim=1))
        ego = torch.cat([net.user_embedding.weight, net.item_id_embedding.weight])
        cge = (ego + adj @ ego + adj @ adj @ ego) / 3
        mge = 0
        for m in ("image", "audio"):
            i_f = getattr(net, f"features_{m}") @ net.projections[m]
            u_f = (r @ i_f) / (r.sum(1, keepdim=True) + 1e-7)
            mge = mge + F.normalize(adj @ (adj @ torch.cat([u_f, i_f])))
        ghe = 0
        for m in ("image", "audio"):
            i_h, u_h = hyper[m]
            latent = i_h.T @ cge[n_u:]
            ghe = ghe + torch.cat([u_h @ latent, i_h @ latent])
        expected = cge + mge + 0.3 * F.normalize(ghe)
    assert torch.allclose(torch.cat([users, items]), expected, atol=1e-5)

