r"""
SelfCF
################################################
Reference:
    Xin Zhou, Aixin Sun, Yong Liu, Jie Zhang and Chunyan Miao. "SelfCF: A Simple Framework for
    Self-supervised Collaborative Filtering." ACM Transactions on Recommender Systems 1(2), 2023.

A general (ID-only) recommender, the MG paper's table 9, in the ``ed`` (embedding dropout) variant with a
LightGCN backbone that the MG authors' release ships (``SELFCFED_LGN``). No negative samples:

* Backbone: LightGCN over the user-item graph (``n_layers``, mean of layers). During training the graph's
  entries are dropped at a rate drawn uniformly from [0, ``edge_dropout``) for every batch and the kept
  ones scaled by 1 / (1 - rate) (BUIR's encoder, which the authors' code reuses; 1.0 in their code).
* Views (section 3.2, "ed"): the online output is a predictor (one linear layer) of the backbone's
  embedding; the target is the same embedding with dropout ``dropout``, stop-gradient.
* Loss (eq. 5-6): -cos(h(u), i~) / 2 - cos(h(i), u~) / 2 over the batch's interactions, plus
  ``reg_weight`` times half the sum of squares of the batch's backbone embeddings (the authors' ``L2Loss``).
* Score (eq. 7): h(u) . i + u . h(i).

Defaults are the authors' SelfCF code (no edge dropout, no regulariser). The MG release's port (MMRec)
adds both (``edge_dropout: 1.0``, ``reg_weight: 0.1``, in ``presets/mg/SelfCF.yaml``); on ml-100k that
regulariser, a sum over the batch, shrinks the embeddings until the ranking is lost (Recall@10 0.0002
after three epochs, 0.12 without it), so it is the preset's only.
"""
import torch
import torch.nn.functional as F
from torch import nn

from recbole.model.abstract_recommender import GeneralRecommender
from recbole.utils import InputType

from recbole_robust.errors import RecBoleRobustError
from recbole_robust.model.cache import FullSortCache
from recbole_robust.model.layers import EdgeDropout, LightGCNEncoder


class SelfCF(GeneralRecommender):
    r"""Self-supervised CF (embedding-dropout variant, LightGCN backbone), trained without negatives."""

    input_type = InputType.POINTWISE

    def __init__(self, config, dataset):
        super().__init__(config, dataset)

        # load parameters info
        self.embedding_size = config["embedding_size"]
        self.dropout = config["dropout"]
        self.edge_dropout = config["edge_dropout"]
        self.reg_weight = config["reg_weight"]
        if not 0 <= self.edge_dropout <= 1:
            raise RecBoleRobustError(f"edge_dropout must be in [0, 1], got {self.edge_dropout}")

        # define layers and loss
        self.encoder = LightGCNEncoder(dataset, config["n_layers"], torch.device(config["device"]))
        self.edge_dropout_graph = EdgeDropout(self.encoder.norm_adj)
        self.user_embedding = nn.Embedding(self.n_users, self.embedding_size)
        self.item_embedding = nn.Embedding(self.n_items, self.embedding_size)
        nn.init.xavier_uniform_(self.user_embedding.weight)
        nn.init.xavier_uniform_(self.item_embedding.weight)
        self.predictor = nn.Linear(self.embedding_size, self.embedding_size)
        self._full_sort_cache = FullSortCache()
        self.perturbation_targets = {"user_embedding.weight": "row", "item_embedding.weight": "row"}

    def forward(self, adjacency=None, adjacency_t=None):
        return self.encoder(self.user_embedding.weight, self.item_embedding.weight, adjacency, adjacency_t)

    def _training_graph(self):
        if not self.training or self.edge_dropout <= 0:
            return None, None
        return self.edge_dropout_graph(torch.rand(()).item() * self.edge_dropout)

    def _online(self, interaction):
        users, items = self.forward(*self._training_graph())
        return users[interaction[self.USER_ID]], items[interaction[self.ITEM_ID]]

    def _loss(self, u, i):
        with torch.no_grad():
            u_target = F.dropout(u, self.dropout, training=self.training)
            i_target = F.dropout(i, self.dropout, training=self.training)
        return -(F.cosine_similarity(self.predictor(u), i_target, dim=-1).mean()
                 + F.cosine_similarity(self.predictor(i), u_target, dim=-1).mean()) / 2

    def rec_loss(self, interaction):
        return self._loss(*self._online(interaction))

    def calculate_loss(self, interaction):
        u, i = self._online(interaction)
        return self._loss(u, i) + self.reg_weight * 0.5 * (u.pow(2).sum() + i.pow(2).sum())

    def _scores_inputs(self):
        users, items = self.forward()
        return users, self.predictor(users), items, self.predictor(items)

    def predict(self, interaction):
        users, h_users, items, h_items = self._full_sort_cache.get(self, self._scores_inputs)
        u, i = interaction[self.USER_ID], interaction[self.ITEM_ID]
        return (h_users[u] * items[i]).sum(-1) + (users[u] * h_items[i]).sum(-1)

    def full_sort_predict(self, interaction):
        users, h_users, items, h_items = self._full_sort_cache.get(self, self._scores_inputs)
        u = interaction[self.USER_ID]
        return (h_users[u] @ items.T + users[u] @ h_items.T).view(-1)
