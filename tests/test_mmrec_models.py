"""MMRec's newer models (MGCN, LGMRec, PGL, SMORE, MMGCF, DAMRS, MVGAE): their graphs and forward passes against dense formulas and
MMRec's code written out (training, scoring and beating Pop: test_mg_models.py)."""
import pytest
import torch
import torch.nn.functional as F

from recbole_robust.errors import RecBoleRobustError
from recbole_robust.model.general_recommender.smore import max_pool
from recbole_robust.quick_start import build_model, load_data, make_config, validate_run
from recbole_robust.registry import get_trainer
from test_mg_models import SMALL


def trainer_of(fast, model, **config):
    """The model under the MG preset (MMRec's defaults) with the small sizes of test_mg_models, and its training data."""
    config = make_config(model, "tiktok", preset="mg", config_dict={**fast, **SMALL[model], **config})
    _, train_data, _, _ = load_data(config)
    return get_trainer(config["MODEL_TYPE"], model)(config, build_model(config, train_data)), train_data


def test_mgcn_graphs_equal_the_dense_formulas(fast):
    trainer, train_data = trainer_of(fast, "MGCN")
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


def test_mgcn_fusion_is_the_papers_with_two_modalities(fast):
    """MMRec's forward for image and text, written out with dense matrices, gives the same embeddings."""
    trainer, _ = trainer_of(fast, "MGCN")
    net = trainer.model.eval()
    with torch.no_grad():
        users, items = net.forward()
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


@pytest.mark.parametrize("form", ["in-batch", "all candidates", "no rows"])
def test_info_nce_equals_mmrecs_written_out_with_repeated_rows(form):
    """The InfoNCE of MGCN, SMORE, LGMRec and PGL computes each repeated batch row once, weighted by its count, and
    its own backward pass: value and gradients equal MMRec's form over the batch's rows, repeats included."""
    from recbole_robust.model.general_recommender.mgcn import info_nce

    def mmrec(view1, view2, candidates=None, reduction="mean"):  # MMRec's InfoNCE / LGMRec's ssl_triple_loss
        view1, view2 = F.normalize(view1, dim=1), F.normalize(view2, dim=1)
        candidates = view2 if candidates is None else F.normalize(candidates, dim=1)
        pos = torch.exp((view1 * view2).sum(-1) / 0.2)
        losses = -torch.log(pos / torch.exp(view1 @ candidates.T / 0.2).sum(1))
        return losses.sum() if reduction == "sum" else losses.mean()

    torch.manual_seed(0)
    a = torch.randn(40, 8, dtype=torch.float64, requires_grad=True)
    b = torch.randn(40, 8, dtype=torch.float64, requires_grad=True)
    rows = torch.randint(0, 40, (100,))  # about 37 distinct rows, repeated
    assert len(rows.unique()) < len(rows)
    ours, expected = {
        "in-batch": lambda: (info_nce(a, b, rows), mmrec(a[rows], b[rows])),
        "all candidates": lambda: (info_nce(a, b, rows, 0.2, b, "sum"), mmrec(a[rows], b[rows], b, "sum")),
        "no rows": lambda: (info_nce(a[rows], b[rows]), mmrec(a[rows], b[rows])),
    }[form]()
    assert torch.allclose(ours, expected, rtol=1e-12)
    for got, want in zip(torch.autograd.grad(ours, [a, b]), torch.autograd.grad(expected, [a, b])):
        assert torch.allclose(got, want, rtol=1e-9, atol=1e-12)
    with torch.autocast("cpu", dtype=torch.bfloat16):  # mixed precision: computed in float32, gradients flow back
        loss = info_nce(a.float(), b.float(), rows)
    assert loss.dtype == torch.float32 and torch.isclose(loss.double(), mmrec(a[rows], b[rows]), rtol=1e-5)
    loss.backward()
    assert a.grad is not None and torch.isfinite(a.grad).all()


@pytest.mark.parametrize("model", ["MGCN", "SMORE"])
def test_side_view_loss_over_the_batchs_rows_equals_the_loss_over_all_rows(fast, model):
    """MGCN's and SMORE's training loss computes the views' per-row part for the batch's rows only: its value and
    every parameter's gradient equal MMRec's loss over the whole views, indexed by the batch (SMORE's gate dropout
    off: the two computations would draw different masks)."""
    trainer, train_data = trainer_of(fast, model, **({"dropout_rate": 0.0} if model == "SMORE" else {}))
    net = trainer.model.train()
    batch = next(iter(train_data))
    user, pos, neg = batch[net.USER_ID], batch[net.ITEM_ID], batch[net.NEG_ITEM_ID]
    assert len(user.unique()) < len(user)  # the batch repeats users
    params = [p for p in net.parameters() if p.requires_grad]
    ours = net.calculate_loss(batch)
    grads = torch.autograd.grad(ours, params, allow_unused=True)

    def nce(view1, view2):  # MMRec's InfoNCE over the batch's rows
        view1, view2 = F.normalize(view1, dim=1), F.normalize(view2, dim=1)
        scores = torch.exp(view1 @ view2.T / 0.2)
        return -torch.log(scores.diag() / scores.sum(1)).mean()

    final, side, content = net.views()
    users, items = final[:net.n_users], final[net.n_users:]
    u, p, n = users[user], items[pos], items[neg]
    expected = (net.bpr(u, p, n) + net.reg_weight * 0.5 * (u.pow(2).sum() + p.pow(2).sum() + n.pow(2).sum())
                / net.batch_size + net.cl_weight * (nce(side[net.n_users + pos], content[net.n_users + pos])
                                                    + nce(side[user], content[user])))
    assert torch.allclose(ours, expected, rtol=1e-5)
    for param, got, want in zip(params, grads, torch.autograd.grad(expected, params, allow_unused=True)):
        assert (got is None) == (want is None)
        if got is not None:
            assert torch.allclose(got, want, rtol=1e-4, atol=1e-7), param.shape


def test_lgmrec_forward_equals_mmrecs_written_out(fast):
    """MMRec's LGMRec.forward for image and text with dense matrices, the same Gumbel draws (evaluation: no dropout)."""
    trainer, train_data = trainer_of(fast, "LGMRec")
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


def test_pgl_principal_subgraph_keeps_30_percent_of_the_edges(fast):
    trainer, train_data = trainer_of(fast, "PGL")
    net = trainer.model
    net.pre_epoch_processing()
    n_edges = len(train_data.dataset.inter_feat)
    kept = net.principal.to_dense()[:net.n_users, net.n_users:]
    assert (kept > 0).sum() == int(n_edges * 0.3)
    assert torch.equal(net.principal.to_dense(), net.principal.to_dense().T)


def test_pgl_forward_equals_mmrecs_written_out(fast):
    trainer, _ = trainer_of(fast, "PGL")
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


def test_pgl_global_mode_is_refused(fast):
    with pytest.raises(RecBoleRobustError, match="PGL mode 'global' is not available"):
        validate_run("PGL", "tiktok", preset="mg", config_dict={**fast, "mode": "global"})


def test_smore_max_pool_is_the_elementwise_maximum_over_the_union_of_edges():
    a = torch.tensor([[0.0, 0.5, 0.0], [0.2, 0.0, 0.0], [0.0, 0.0, 0.3]])
    b = torch.tensor([[0.0, 0.1, 0.4], [0.6, 0.0, 0.0], [0.0, 0.0, 0.0]])
    pooled = max_pool([a.to_sparse_csr(), b.to_sparse_csr()]).to_dense()
    assert torch.equal(pooled, torch.maximum(a, b))


def test_smore_forward_equals_mmrecs_written_out(fast):
    """MMRec's SMORE.forward for image and text (evaluation: no dropout), with dense matrices."""
    trainer, _ = trainer_of(fast, "SMORE")
    net = trainer.model.eval()
    with torch.no_grad():
        users, items = net.forward()
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


@pytest.mark.parametrize("fusion, weighting", [("mean", "equal"), ("sum", "alpha"), ("concat", "normalized"),
                                               ("concat", "equal")])
def test_mmgcf_fusion_equals_mmrecs_written_out(fast, fusion, weighting):
    trainer, _ = trainer_of(fast, "MMGCF", fusion_mode=fusion, weighting=weighting)
    net = trainer.model.eval()
    with torch.no_grad():
        users, items = net.forward()
        adj = net.encoder.norm_adj.to_dense()
        ego = torch.cat([net.user_embedding.weight, net.item_id_embedding.weight])
        out = (ego + adj @ ego) / 2  # one layer and the ego layer
        item = out[net.n_users:]
        feats = [net.projections[m](getattr(net, f"features_{m}")) for m in ("image", "audio")]

        def fuse(parts, layer):
            return {"mean": lambda: torch.stack(parts).mean(0), "sum": lambda: torch.stack(parts).sum(0),
                    "concat": lambda: layer(torch.cat(parts, -1))}[fusion]()

        if weighting == "alpha":
            a = torch.sigmoid(net.alpha)
            expected = fuse([item * a] + [x * (1 - a) for x in feats], getattr(net, "all_concat", None))
        elif weighting == "normalized":
            expected = fuse([F.normalize(item) * 2] + [F.normalize(x) for x in feats], getattr(net, "all_concat", None))
        else:
            expected = fuse([item, fuse(feats, getattr(net, "modality_concat", None))], getattr(net, "id_concat", None))
    assert torch.allclose(users, out[:net.n_users], atol=1e-5)
    assert torch.allclose(items, expected, atol=1e-5)


def test_damrs_graphs_equal_the_dense_formulas():
    """Each modality's item graph keeps an item's k most similar items among those at least as similar as the mean
    pair in every modality (fewer where fewer are), then D^-1/2 A D^-1/2; the behaviour graph links each item to
    its k items with most users in common, weighted by the count, and to itself."""
    from recbole_robust.data.graphs import DEGREE_OFFSET, agreeing_knn_graphs, item_behaviour_graph

    generator = torch.Generator().manual_seed(0)
    features = {"image": torch.randn(40, 6, generator=generator), "text": torch.randn(40, 5, generator=generator)}
    k = 4
    graphs = agreeing_knn_graphs(features, k, block_size=7)
    sims = {m: F.normalize(f.double(), dim=1) @ F.normalize(f.double(), dim=1).T for m, f in features.items()}
    kept = (sims["image"] >= sims["image"].mean()) & (sims["text"] >= sims["text"].mean())
    for m, sim in sims.items():
        a = torch.zeros_like(sim)
        for i in range(40):
            candidates = kept[i].nonzero().squeeze(1)
            best = candidates[sim[i, candidates].argsort(descending=True)[:k]]
            a[i, best] = 1.0
        d = (a.sum(1) + DEGREE_OFFSET).pow(-0.5)
        assert torch.allclose(graphs[m].to_dense().double(), d[:, None] * a * d[None, :], atol=1e-6)
    assert (graphs["image"].to_dense() > 0).sum(1).min() < k  # some item has fewer agreeing neighbours than k
    users = torch.randint(0, 30, (200,), generator=generator)
    items = torch.randint(0, 25, (200,), generator=generator)
    graph = item_behaviour_graph(users.numpy(), items.numpy(), 30, 25, k).to_dense().double()
    r = torch.zeros(30, 25, dtype=torch.float64)
    r[users, items] = 1.0
    common = r.T @ r
    common.fill_diagonal_(0)
    a = torch.eye(25, dtype=torch.float64)
    for i in range(25):
        order = sorted(range(25), key=lambda j: (-common[i, j].item(), j))
        chosen = [j for j in order if common[i, j] > 0][:k]
        a[i, chosen] = common[i, chosen]
    d = (a.sum(1) + DEGREE_OFFSET).pow(-0.5)
    assert torch.allclose(graph, d[:, None] * a * d[None, :], atol=1e-6)


def test_damrs_weights_follow_the_views_agreement():
    """A positive the views agree on and like gets a weight near 1 and no negative weight; one they disagree on gets
    less; one below the batch's negatives on average that a view likes gets a negative weight."""
    from recbole_robust.model.general_recommender.damrs import DAMRS, symmetric_bernoulli_kl

    a, b = torch.randn(50, dtype=torch.float64) * 3, torch.randn(50, dtype=torch.float64) * 3
    p, q = torch.sigmoid(a), torch.sigmoid(b)
    kl = lambda x, y: x * x.log() - x * y.log() + (1 - x) * (1 - x).log() - (1 - x) * (1 - y).log()  # noqa: E731
    assert torch.allclose(symmetric_bernoulli_kl(a, b), kl(p, q) + kl(q, p))  # MMRec's two terms, summed
    assert torch.isfinite(symmetric_bernoulli_kl(torch.tensor([40.0]), torch.tensor([-40.0]))).all()
    similarities = [torch.rand(30, 200) * 2 - 1 for _ in range(3)]  # cosines
    views = [torch.softmax(s, dim=1) for s in similarities]
    for k, (shared, own) in enumerate(DAMRS.pseudo_labels(similarities)):
        mm_positive = torch.topk(sum(views) + views[k], 10, dim=-1).indices  # MMRec's, written out
        single = torch.topk(views[k].clone().scatter_(1, mm_positive, 0), 10, dim=-1).indices
        assert torch.equal(shared.sort(1).values, mm_positive.sort(1).values)
        assert torch.equal(own.sort(1).values, single.sort(1).values)
    u = torch.full((2, 3), 5.0)
    agree = [torch.full((2, 3), 5.0)] * 3
    disagree = [torch.full((2, 3), 5.0), torch.full((2, 3), -5.0), torch.full((2, 3), 5.0)]
    low = [torch.full((2, 3), -1.0)] * 3
    pos_weight, neg_weight = DAMRS.feedback_weights(u, agree, low)
    assert torch.all(pos_weight > 0.9) and torch.all(neg_weight == 0)
    weaker, _ = DAMRS.feedback_weights(u, disagree, low)
    assert torch.all(weaker < pos_weight)
    # a positive below the batch's negatives on average, that one view scores above them: pushed the other way
    split = [torch.full((2, 3), 5.0), torch.full((2, 3), -5.0), torch.full((2, 3), -5.0)]
    _, pushed = DAMRS.feedback_weights(u, split, [torch.zeros(2, 3)] * 3)
    assert torch.allclose(pushed, torch.full((2,), 0.5), atol=1e-3)


def test_damrs_neighbour_discrimination_equals_mmrecs_written_out():
    """The discrimination's denominators come from the similarities computed once for the pseudo-labels
    (``exp_product_sums`` with the caller's exp): value and gradients equal MMRec's form written out."""
    from recbole_robust.model.general_recommender.damrs import DAMRS

    torch.manual_seed(0)
    h = torch.randn(60, 8, dtype=torch.float64, requires_grad=True)
    batch = torch.tensor([3, 7, 8, 20, 41])
    shared, own = torch.randint(0, 60, (5, 10)), torch.randint(0, 60, (5, 10))

    def mmrec(h):
        normed = F.normalize(h, dim=1)
        anchors = normed[batch]
        total = torch.exp(anchors @ normed.T / 0.2).sum(1)
        shared_score = torch.exp((anchors[:, None] * normed[shared]).sum(-1) / 0.2).sum(1)
        own_score = torch.exp((anchors[:, None] * normed[own]).sum(-1) / 0.2).sum(1)
        return (-torch.log(shared_score / total + 1e-9) - torch.log(own_score / (total - shared_score) + 1e-9)).mean()

    expected = mmrec(h)
    expected_grad, = torch.autograd.grad(expected, h)
    normed = F.normalize(h, dim=1)
    with torch.no_grad():
        exp_similarity = torch.exp(normed[batch] @ normed.T / 0.2)
    loss = DAMRS.neighbour_discrimination(shared, own, normed[batch], normed, exp_similarity)
    grad, = torch.autograd.grad(loss, h)
    assert torch.allclose(loss, expected, rtol=1e-9) and torch.allclose(grad, expected_grad, rtol=1e-7, atol=1e-12)


def test_mvgae_encoder_and_fusion_equal_the_dense_formulas(fast):
    """The mean aggregation averages a node with its neighbours (self loops); the product of experts sums the
    precisions; evaluation scores with sigmoid of the fused mean; items are offset by n_users in the loss."""
    from recbole_robust.model.general_recommender.mvgae import product_of_experts

    trainer, train_data = trainer_of(fast, "MVGAE")
    net = trainer.model.eval()
    r = torch.from_numpy(train_data.dataset.inter_matrix(form="csr").toarray()).float()
    n = net.n_users + net.n_items
    adjacency = torch.eye(n)
    adjacency[:net.n_users, net.n_users:] += r
    adjacency[net.n_users:, :net.n_users] += r.T
    assert torch.allclose(net.mean_adj.to_dense(), adjacency / adjacency.sum(1, keepdim=True), atol=1e-6)
    mus, logvars = [torch.randn(5, 3), torch.randn(5, 3)], [torch.randn(5, 3), torch.randn(5, 3)]
    mu, logvar = product_of_experts(mus, logvars)
    precision = 1 / (logvars[0].exp() + 1e-8) + 1 / (logvars[1].exp() + 1e-8)
    assert torch.allclose(logvar, -precision.log(), atol=1e-5)
    assert torch.allclose(mu, (mus[0] / (logvars[0].exp() + 1e-8) + mus[1] / (logvars[1].exp() + 1e-8)) / precision,
                          atol=1e-5)
    with torch.no_grad():
        views, fused = net.encode()
        expected = product_of_experts(*zip(product_of_experts(*zip(*(views[m] for m in net.modalities))),
                                           views["collaborative"]))
        assert torch.allclose(net.forward(), torch.sigmoid(expected[0]), atol=1e-6)
        z = torch.sigmoid(fused[0])
        batch = next(iter(train_data))
        user, pos, neg = batch[net.USER_ID], batch[net.ITEM_ID], batch[net.NEG_ITEM_ID]
        score = torch.sigmoid((z[user] * z[pos + net.n_users]).sum(-1))
        hardest = torch.sigmoid(torch.stack([(z[user] * z[j + net.n_users]).sum(-1) for j in neg]).max(0).values)
        expected_loss = -torch.log2(torch.sigmoid(score - hardest)).sum()
        assert torch.allclose(net.rec_loss(batch), expected_loss, rtol=1e-4)
    assert set(net.encoders) == {"image", "audio", "collaborative"}
    assert not any(name.endswith("preference") for name, _ in net.named_parameters())  # fixed, as MMRec's
