r"""
MVGAE
################################################
Reference:
    Jing Yi and Zhenzhong Chen. "Multi-Modal Variational Graph Auto-Encoder for Recommendation Systems." IEEE
    Transactions on Multimedia 24, 2021. Defaults: MMRec's ``configs/model/MVGAE.yaml`` (first value of each grid:
    learning rate 1e-4, beta 0.01), the layers as MMRec's port (``src/models/mvgae.py``) builds them.

One variational graph encoder per view: every modality of the dataset, and a collaborative view whose "features" are
a fixed random matrix [n_items, ``embedding_size``]. A view's encoder (MMRec's ``GCN``) takes the users' preference
vectors and the items' features projected by a linear layer to ``latent_size``, L2-normalised, through
``n_layers`` graph layers ``x = LeakyReLU(G_l LeakyReLU(conv_l(x)))`` and two heads

    mu = G_mu LeakyReLU(conv_mu(x)) + LeakyReLU(W_mu x),    log sigma^2 = G_s LeakyReLU(conv_s(x)) + LeakyReLU(W_s x)

where ``conv(x)`` is MMRec's ``BaseModel`` with mean aggregation: the mean of x W over the node and its neighbours
on the user-item graph, plus a bias, L2-normalised, then dropout 0.1. The views are fused by a product of Gaussian
experts (sum of precisions): first the modalities, then with the collaborative view. A node's code
``z = mu + 0.1 sigma eps`` in training, ``mu`` at evaluation.

Loss, summed over the fused code and each view's own code (MMRec: fused, image, text, collaborative):
``-sum_batch log2 sigmoid(s(u, i) - max_j s(u, j)) + beta KL(N(mu, sigma^2) || N(0, I))``, with
``s(u, i) = sigmoid(sigmoid(z_u) . sigmoid(z_i))`` (the sigmoids of MMRec's "amazon" setting, which its port always
uses), ``j`` over the batch's sampled negatives (the hardest one for each user), the KL the mean over nodes of the
sum over dimensions (log sigma^2 clamped at 10). Scores: ``sigmoid(mu_u) . sigmoid(mu_i)`` of the fused view.

Where this port differs from MMRec's, and why:

* MMRec indexes the code matrix (users first, then items) with raw item ids in the loss, so its loss scores users
  against *user* rows; here items are offset by ``n_users``, as the authors' code does (their loader offsets them);
* the hard negative's ``[batch, batch, d]`` tensor is a ``[batch, batch]`` matrix product (the same maximum).

As in MMRec, the users' preference vectors and the collaborative view's features stay at their random
initialisation (MMRec keeps them in plain tensors the optimiser never sees): buffers here. The reconstruction
term is a sum over the batch, as MMRec's: with ``nproc`` > 1 the processes' gradients are averaged, so it weighs
``1/nproc`` against the KL term there (docs/training.md).
"""
import math

import torch
import torch.nn.functional as F
from recbole.model.abstract_recommender import GeneralRecommender
from recbole.utils import InputType
from torch import nn

from recbole_robust.data.graphs import csr_transpose, mean_adjacency
from recbole_robust.errors import RecBoleRobustError
from recbole_robust.model.cache import FullSortCache, PropagatedScores
from recbole_robust.model.layers import graph_product

MAX_LOGVAR = 10.0
NOISE_SCALE = 0.1  # MMRec's reparametrisation: mu + 0.1 sigma eps


def _xavier_linear(n_in, n_out):
    layer = nn.Linear(n_in, n_out)
    nn.init.xavier_normal_(layer.weight)
    return layer


class MeanConv(nn.Module):
    """MMRec's ``BaseModel`` (mean aggregation): ``dropout(normalize(mean_{j in N(i) + i} x_j W + b))``."""

    def __init__(self, n_in, n_out, dropout):
        super().__init__()
        self.weight = nn.Parameter(nn.init.xavier_normal_(torch.empty(n_in, n_out)))  # re-initialised as MMRec
        bound = 1.0 / math.sqrt(n_in)
        self.bias = nn.Parameter(torch.empty(n_out).uniform_(-bound, bound))  # PyG's uniform(in_channels, bias)
        self.dropout = dropout

    def forward(self, x, adjacency, adjacency_t):
        h = graph_product(adjacency, x @ self.weight, adjacency_t) + self.bias
        return F.dropout(F.normalize(h, dim=-1), self.dropout, self.training)


class ViewEncoder(nn.Module):
    """MVGAE's variational graph encoder of one view: ``(mu, log sigma^2)`` of every node."""

    def __init__(self, n_users, feat_dim, latent_size, d, n_layers, dropout):
        super().__init__()
        self.register_buffer("preference", nn.init.xavier_normal_(torch.empty(n_users, latent_size)))
        self.projection = _xavier_linear(feat_dim, latent_size)
        dims = [latent_size] + [d] * n_layers
        self.convs = nn.ModuleList(MeanConv(dims[l], d, dropout) for l in range(n_layers))
        self.combines = nn.ModuleList(nn.Linear(d, d) for _ in range(n_layers))
        nn.init.xavier_normal_(self.combines[0].weight)  # MMRec re-initialises g_layer1 only
        self.conv_mu, self.conv_logvar = MeanConv(d, d, dropout), MeanConv(d, d, dropout)
        self.linear_mu, self.linear_logvar = _xavier_linear(d, d), _xavier_linear(d, d)
        self.combine_mu, self.combine_logvar = _xavier_linear(d, d), _xavier_linear(d, d)

    def forward(self, features, adjacency, adjacency_t):
        x = F.normalize(torch.cat([self.preference, self.projection(features)]))
        for conv, combine in zip(self.convs, self.combines):
            x = F.leaky_relu(combine(F.leaky_relu(conv(x, adjacency, adjacency_t))))
        mu = self.combine_mu(F.leaky_relu(self.conv_mu(x, adjacency, adjacency_t))) + F.leaky_relu(self.linear_mu(x))
        logvar = self.combine_logvar(F.leaky_relu(self.conv_logvar(x, adjacency, adjacency_t))) \
            + F.leaky_relu(self.linear_logvar(x))
        return mu, logvar


def product_of_experts(mus, logvars, eps=1e-8):
    """The Gaussian product of independent experts: precision-weighted mean, summed precision."""
    precision = 1.0 / (torch.stack(logvars).exp() + eps)
    total = precision.sum(0)
    return (torch.stack(mus) * precision).sum(0) / total, (1.0 / total).log()


class MVGAE(PropagatedScores, GeneralRecommender):
    r"""MVGAE: variational graph encoders per modality and a collaborative view, fused by a product of experts."""

    input_type = InputType.PAIRWISE
    needs_item_features = True

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        d, self.beta = config["embedding_size"], config["beta"]
        if config["n_layers"] < 1:
            raise RecBoleRobustError(f"MVGAE: n_layers must be >= 1, got {config['n_layers']}")
        self.modalities = config["modalities"] or dataset.item_features.modalities
        users, items = dataset.interaction_edges()
        n_nodes = self.n_users + self.n_items
        edges = torch.stack([users, items + self.n_users])
        loops = torch.arange(n_nodes).repeat(2, 1)  # the node itself is averaged in (PyG's add_self_loops)
        adjacency = mean_adjacency(torch.cat([edges, edges.flip(0), loops], dim=1), n_nodes)
        self.register_buffer("mean_adj", adjacency, persistent=False)
        self.register_buffer("mean_adj_t", csr_transpose(adjacency), persistent=False)
        for m in self.modalities:
            self.register_buffer(f"features_{m}", dataset.item_features[m], persistent=False)
        self.register_buffer("collaborative", nn.init.xavier_normal_(torch.empty(self.n_items, d)))
        views = {m: dataset.item_features[m].shape[1] for m in self.modalities}
        self.encoders = nn.ModuleDict({
            view: ViewEncoder(self.n_users, dim, config["latent_size"], d, config["n_layers"], config["dropout"])
            for view, dim in {**views, "collaborative": d}.items()})
        self._full_sort_cache = FullSortCache()
        self.perturbation_targets = {f"features_{m}": "row" for m in self.modalities}

    def modality_location(self, modality):
        return f"features_{modality}", slice(None)

    def encode(self):
        """``{view: (mu, logvar)}`` of every view and the fused ``(mu, logvar)``."""
        views = {m: self.encoders[m](getattr(self, f"features_{m}"), self.mean_adj, self.mean_adj_t)
                 for m in self.modalities}
        views["collaborative"] = self.encoders["collaborative"](self.collaborative, self.mean_adj, self.mean_adj_t)
        modal = product_of_experts(*zip(*(views[m] for m in self.modalities)))
        fused = product_of_experts(*zip(modal, views["collaborative"]))
        return views, fused

    def forward(self):
        """The scoring representation of every node: sigmoid of the fused mean (users first, then items)."""
        return torch.sigmoid(self.encode()[1][0])

    def propagate(self):
        x = self.forward()
        return x[:self.n_users], x[self.n_users:]

    def _code(self, mu, logvar):
        if not self.training:
            return mu
        return mu + torch.randn_like(mu) * NOISE_SCALE * (0.5 * logvar.clamp(max=MAX_LOGVAR)).exp()

    def _reconstruction(self, z, interaction):
        user, pos, neg = interaction[self.USER_ID], interaction[self.ITEM_ID], interaction[self.NEG_ITEM_ID]
        z = torch.sigmoid(z)
        users = z[user]
        positive = torch.sigmoid((users * z[pos + self.n_users]).sum(-1))
        hardest = torch.sigmoid((users @ z[neg + self.n_users].T).max(-1).values)
        return -F.logsigmoid(positive - hardest).sum() / math.log(2.0)

    @staticmethod
    def _kl(mu, logvar):
        logvar = logvar.clamp(max=MAX_LOGVAR)
        return -0.5 * (1 + logvar - mu.pow(2) - logvar.exp()).sum(1).mean()

    def rec_loss(self, interaction):
        """The fused view's reconstruction term (what an adversary on the features perturbs)."""
        _, fused = self.encode()
        return self._reconstruction(self._code(*fused), interaction)

    def calculate_loss(self, interaction):
        views, fused = self.encode()
        return sum(self._reconstruction(self._code(mu, logvar), interaction) + self.beta * self._kl(mu, logvar)
                   for mu, logvar in [fused, *views.values()])
