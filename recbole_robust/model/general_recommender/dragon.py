r"""
DRAGON
################################################
Reference:
    Hongyu Zhou, Xin Zhou, Lingzi Zhang and Zhiqi Shen. "Enhancing Dyadic Relations with Homogeneous Graphs
    for Multimodal Recommendation." in ECAI 2023 (arXiv:2301.12097).

Dual representations learned on a heterogeneous graph and two homogeneous graphs (section 3), as the
authors' code (MMRec's ``dragon.py``) computes them:

* Heterogeneous graph, per modality m (eq. 1-3): items enter as MLP(f_m) (F -> 4d -> d, LeakyReLU between),
  users as a trained preference vector; x = normalize([p_u; MLP(f_i)]); two propagations over the
  symmetrically normalised user-item graph without weights, x_m = x + A x + A^2 x.
* Modality fusion (eq. 4-5, "concatenation"): items [x_image; x_audio ...], users the same with a trained
  per-user weight for each modality (initialised as a softmax).
* Item-item graph (eq. 6-7): the frozen kNN graph of the raw features (``knn_k``, cosine), mixed over the
  modalities with ``modality_weights`` (the authors' ``mm_image_weight``), ``n_mm_layers`` propagations
  added to the items.
* User-user graph (eq. 8-9): each user's ``user_graph_k`` users with the most items in common, weighted by
  the softmax of the counts, resampled before every epoch (``graphs.sampled_user_graph``), its aggregation
  added to the users. The co-occurrence graph is built by the plugin from the training split and cached
  with the dataset build (the authors' code needs a separately generated ``user_graph_dict.npy``).
* Loss: -mean log2 sigmoid(y_ui - y_uj) (computed as -logsigmoid / ln 2, without the authors' log(0)) plus ``reg_weight`` times the mean squared preference vectors of the
  batch's users and the mean squared modality weights.

Every modality of the dataset is used (``modalities`` selects).
"""
import math

import torch
import torch.nn.functional as F
from torch import nn

from recbole.model.abstract_recommender import GeneralRecommender
from recbole.utils import InputType

from recbole_robust.model.cache import FullSortCache, PropagatedScores
from recbole_robust.data.graphs import csr_transpose, mixed_knn_graph, modality_weights, sampled_user_graph
from recbole_robust.model.layers import graph_product


class DRAGON(PropagatedScores, GeneralRecommender):
    r"""DRAGON: heterogeneous user-item graph per modality plus homogeneous user-user and item-item graphs."""

    input_type = InputType.PAIRWISE
    needs_item_features = True
    #: modality fusion: "concat" (DRAGON) or "sum" (DualGNN); DualGNN has no item-item graph
    fusion = "concat"
    item_item_graph = True

    def __init__(self, config, dataset):
        super().__init__(config, dataset)

        # load parameters info
        self.embedding_size = config["embedding_size"]
        self.n_mm_layers = config["n_mm_layers"] if self.item_item_graph else 0
        self.reg_weight = config["reg_weight"]
        self.user_graph_k = config["user_graph_k"]
        self.modalities = config["modalities"] or dataset.item_features.modalities

        # define graphs (fixed: CSR buffers; the user-user co-occurrence graph cached with the dataset build)
        self.register_buffer("ui_adj", dataset.norm_adjacency(), persistent=False)
        for m in self.modalities:
            self.register_buffer(f"features_{m}", dataset.item_features[m], persistent=False)
        if self.item_item_graph:
            self.modality_weights = modality_weights(config["modality_weights"], self.modalities)
            mm_adj = mixed_knn_graph({m: dataset.item_features[m] for m in self.modalities}, self.modality_weights,
                                     config["knn_k"])
            self.register_buffer("mm_adj", mm_adj, persistent=False)
            self.register_buffer("mm_adj_t", csr_transpose(mm_adj), persistent=False)
        # on the model's device (buffers, not saved): the user graph is resampled there every epoch
        for name, array in zip(("indptr", "neighbours", "counts"), dataset.user_cooccurrence(config["user_graph_top"])):
            self.register_buffer(f"user_cooccurrence_{name}", torch.from_numpy(array), persistent=False)
        self.register_buffer("user_graph", None, persistent=False)  # sampled before every epoch
        self.register_buffer("user_graph_t", None, persistent=False)

        # define layers
        d = self.embedding_size
        self.preferences = nn.ParameterDict({
            m: nn.Parameter(nn.init.xavier_normal_(torch.randn(self.n_users, d))) for m in self.modalities
        })
        self.mlps = nn.ModuleDict({
            m: nn.Sequential(nn.Linear(dataset.item_features[m].shape[1], 4 * d), nn.LeakyReLU(), nn.Linear(4 * d, d))
            for m in self.modalities
        })
        self.user_modality_weight = nn.Parameter(
            F.softmax(nn.init.xavier_normal_(torch.randn(self.n_users, len(self.modalities), 1)), dim=1))
        self._full_sort_cache = FullSortCache()
        self.perturbation_targets = {
            **{f"features_{m}": "row" for m in self.modalities},
            **{f"preferences.{m}": "row" for m in self.modalities},
        }
        self.pre_epoch_processing()

    def modality_location(self, modality):
        return f"features_{modality}", slice(None)

    def pre_epoch_processing(self):
        """Resample the user-user graph (each user's ``user_graph_k`` neighbours, softmax weights)."""
        graph = sampled_user_graph(self.user_cooccurrence_indptr, self.user_cooccurrence_neighbours,
                                   self.user_cooccurrence_counts, self.user_graph_k)
        self.user_graph, self.user_graph_t = graph, csr_transpose(graph)

    def _modality(self, m):
        items = self.mlps[m](getattr(self, f"features_{m}"))
        x = F.normalize(torch.cat([self.preferences[m], items]))
        h = graph_product(self.ui_adj, x)
        return x + h + graph_product(self.ui_adj, h)

    def forward(self):
        """Users and items: [n, d * M] (concatenation) or [n, d] (sum)."""
        reps = [self._modality(m) for m in self.modalities]
        users = [self.user_modality_weight[:, j] * rep[: self.n_users] for j, rep in enumerate(reps)]
        items = [rep[self.n_users:] for rep in reps]
        if self.fusion == "concat":
            users, items = torch.cat(users, 1), torch.cat(items, 1)
        else:
            users, items = torch.stack(users).sum(0), torch.stack(items).sum(0)
        h = items
        for _ in range(self.n_mm_layers):
            h = graph_product(self.mm_adj, h, self.mm_adj_t)
        return users + graph_product(self.user_graph, users, self.user_graph_t), items + h

    def rec_loss(self, interaction):
        user, pos, neg = interaction[self.USER_ID], interaction[self.ITEM_ID], interaction[self.NEG_ITEM_ID]
        users, items = self.forward()
        u = users[user]
        # -log2 sigmoid(x) of the authors' code, as -logsigmoid(x) / ln 2: the same value without log(0) = -inf
        return -F.logsigmoid((u * items[pos]).sum(-1) - (u * items[neg]).sum(-1)).mean() / math.log(2)

    def calculate_loss(self, interaction):
        user = interaction[self.USER_ID]
        reg = sum((self.preferences[m][user] ** 2).mean() for m in self.modalities) \
            + (self.user_modality_weight ** 2).mean()
        return self.rec_loss(interaction) + self.reg_weight * reg
