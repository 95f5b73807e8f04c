r"""
LayerGCN
################################################
Reference:
    Xin Zhou, Donghui Lin, Yong Liu and Chunyan Miao. "Layer-refined Graph Convolutional Networks for
    Recommendation." in ICDE 2023.

A general (ID-only) recommender, the MG paper's table 9:

* Layer refinement (eq. 6-7): x_l = A x_{l-1}, then each node's row is scaled by its cosine similarity
  with the ego (layer-0) embedding, x_l <- cos(x_l, x_0) x_l; the representation is the sum of the
  refined layers 1..L (the ego layer is left out, as in the authors' code).
* Degree-sensitive edge dropout (section IV-C): before every epoch ``dropout`` of the user-item edges are
  dropped, sampled with probability proportional to d_u^-1/2 d_i^-1/2, alternating with uniform sampling
  from epoch to epoch as the authors' code does; evaluation uses the full graph.
* Loss: BPR summed over the batch plus ``reg_weight`` times half the sum of squares of the batch's ego
  embeddings (the authors' ``L2Loss``).
"""
import torch
import torch.nn.functional as F
from torch import nn

from recbole.model.abstract_recommender import GeneralRecommender
from recbole.utils import InputType

from recbole_robust.model.cache import FullSortCache, PropagatedScores
from recbole_robust.model.layers import EdgePruning, graph_product


class LayerGCN(PropagatedScores, GeneralRecommender):
    r"""Layer-refined GCN: propagated layers re-weighted by their similarity with the ego embedding."""

    input_type = InputType.PAIRWISE

    def __init__(self, config, dataset):
        super().__init__(config, dataset)

        # load parameters info
        self.embedding_size = config["embedding_size"]
        self.n_layers = config["n_layers"]
        self.reg_weight = config["reg_weight"]

        # define layers and loss
        device = torch.device(config["device"])
        users, items = (t.to(device) for t in dataset.interaction_edges())
        self.pruning = EdgePruning(users, items, self.n_users, self.n_items, config["dropout"])
        self.register_buffer("norm_adj", dataset.norm_adjacency().to(device), persistent=False)
        self.masked_adj = None
        # the authors' code alternates degree-sensitive and uniform pruning; a buffer, so that a checkpoint holds
        # which comes next and a run resumed after an odd epoch goes on as an uninterrupted one
        self.register_buffer("degree_sensitive", torch.tensor(True))
        self.user_embedding = nn.Embedding(self.n_users, self.embedding_size)
        self.item_embedding = nn.Embedding(self.n_items, self.embedding_size)
        nn.init.xavier_uniform_(self.user_embedding.weight)
        nn.init.xavier_uniform_(self.item_embedding.weight)
        self._full_sort_cache = FullSortCache()
        self.perturbation_targets = {"user_embedding.weight": "row", "item_embedding.weight": "row"}

    def pre_epoch_processing(self):
        self.masked_adj = self.pruning(bool(self.degree_sensitive))
        self.degree_sensitive.logical_not_()

    def forward(self, adjacency=None):
        ego = torch.cat([self.user_embedding.weight, self.item_embedding.weight])
        x, out = ego, 0
        for _ in range(self.n_layers):
            x = graph_product(self.norm_adj if adjacency is None else adjacency, x)
            x = F.cosine_similarity(x, ego, dim=-1).unsqueeze(-1) * x
            out = out + x
        return out[: self.n_users], out[self.n_users:]

    def rec_loss(self, interaction):
        user, pos, neg = interaction[self.USER_ID], interaction[self.ITEM_ID], interaction[self.NEG_ITEM_ID]
        users, items = self.forward(self.masked_adj)
        u = users[user]
        return -F.logsigmoid((u * items[pos]).sum(-1) - (u * items[neg]).sum(-1)).sum()

    def calculate_loss(self, interaction):
        user, pos, neg = interaction[self.USER_ID], interaction[self.ITEM_ID], interaction[self.NEG_ITEM_ID]
        reg = sum(e.pow(2).sum() for e in (self.user_embedding(user), self.item_embedding(pos), self.item_embedding(neg)))
        return self.rec_loss(interaction) + self.reg_weight * 0.5 * reg
