"""PGL (MMRec's model zoo): training over principal subgraphs, scoring, and MMRec's forward written out."""
import pytest
import torch
import torch.nn.functional as F
from recbole.data.interaction import Interaction

from recbole_robust.errors import RecBoleRobustError
from recbole_robust.quick_start import build_model, load_data, make_config, validate_run
from recbole_robust.registry import get_trainer

SMALL = {"embedding_size": 16, "feat_embed_dim": 16, "learning_rate": 0.01}


def trainer_of(fast, **config):
    config = make_config("PGL", "tiktok", preset="mg", config_dict={**fast, **SMALL, **config})
    _, train_data, valid_data, _ = load_data(config)
    trainer = get_trainer(config["MODEL_TYPE"], "PGL")(config, build_model(config, train_data))
    return trainer, train_data, valid_data


def test_loss_falls_and_full_sort_equals_predict(fast):
    trainer, train_data, valid_data = trainer_of(fast, epochs=4, reg_weight=0.1)
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


def test_principal_subgraph_keeps_30_percent_of_the_edges(fast):
    trainer, train_data, _ = trainer_of(fast)
    net = trainer.model
    net.pre_epoch_processing()
    n_edges = len(train_data.dataset.inter_feat)
    kept = net.principal.to_dense()[:net.n_users, net.n_users:]
    assert (kept > 0).sum() == int(n_edges * 0.3)
    assert torch.equal(net.principal.to_dense(), net.principal.to_dense().T)


def test_forward_equals_mmrecs_written_out(fast):
    trainer, _, _ = trainer_of(fast)
    net = trainer.model.eval()
    with torch.no_grad():
        users, items = net.forward()
        u = torch.cat([net.user_embeddings["image"].weight, net.user_embeddings["audio"].weight], dim=1)
        i = torch.cat([F.normalize(net.projections[m](net.modality_embeddings[m].weight)) for m in ("image", "audio")],
                      dim=1)
        h = net.mm_adj.to_dense() @ i
        adj = net.encoder.norm_adj.to_dense()
        ego = torch.cat([u, i])
        out = (ego + adj @ ego + adj @ adj @ ego) / 3
        assert torch.allclose(users, out[:net.n_users], atol=1e-5)
        assert torch.allclose(items, out[net.n_users:] + h, atol=1e-5)


def test_global_mode_is_refused(fast):
    with pytest.raises(RecBoleRobustError, match="PGL mode 'global' is not available"):
        validate_run("PGL", "tiktok", preset="mg", config_dict={**fast, "mode": "global"})
