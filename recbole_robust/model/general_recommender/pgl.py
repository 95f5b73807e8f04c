r"""
PGL
################################################
Reference:
    Penghang Yu, Zhiyi Tan, Guanming Lu and Bing-Kun Bao. "Mind Individual Information! Principal Graph Learning for
    Multimedia Recommendation." in AAAI 2025. Authors' code: github.com/demonph10/PGL; MMRec's port (enoche/MMRec
    ``src/models/pgl.py``), whose defaults are used.

Principal graph learning, MMRec's default ``local`` mode: each training epoch propagates over a *principal
subgraph* of the user-item graph, 30% of its edges drawn without replacement with probability proportional to
``d_u^-1/2 d_i^-1/2`` and renormalised (the degree-sensitive sampling FREEDOM uses, ``model.layers.EdgePruning``
with ratio 0.7); evaluation propagates over the whole graph. The representations are one block per modality,
concatenated: a user has a free embedding per modality, an item the row-normalised projection ``W_m f^m + b_m`` of
its (trainable) features. Items also propagate ``n_mm_layers`` times over the FREEDOM item kNN graph (``knn_k``
neighbours per modality, binary, symmetrically normalised, mixed with ``mm_image_weight`` for the image modality);
the score is ``u . (i_ui + i_mm)``, with ``u, i_ui`` the mean of the ``n_ui_layers`` LightGCN layers.

Loss: BPR, plus ``reg_weight`` x the mean of two InfoNCE terms (temperature 0.2) between two dropout (``dropout``)
views of the batch's user embeddings and of its positive items' (MMRec's default ``reg_weight`` 0 turns it off).

Where this port differs: any number of modalities (MMRec's names image and text); ``mode: global`` (a subgraph from
a truncated SVD with the ``sparsesvd`` package) is refused with one line; MMRec's learning-rate schedule
``[0.96, 50]`` is not applied (see MGCN).
"""
import torch
import torch.nn.functional as F
from recbole.model.abstract_recommender import GeneralRecommender
from recbole.utils import InputType
from torch import nn

from recbole_robust.data.graphs import csr_transpose, mixed_knn_graph, modality_weights
from recbole_robust.errors import RecBoleRobustError
from recbole_robust.model.cache import BPRPropagation, FullSortCache
from recbole_robust.model.general_recommender.mgcn import info_nce
from recbole_robust.model.layers import EdgePruning, LightGCNEncoder, graph_product

KEEP = 0.3  # MMRec's share of the edges in a principal subgraph


class PGL(BPRPropagation, GeneralRecommender):
    r"""PGL: LightGCN over degree-sensitive principal subgraphs, per-modality blocks, an item kNN graph."""

    input_type = InputType.PAIRWISE
    needs_item_features = True

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        if config["mode"] != "local":
            raise RecBoleRobustError(f"PGL mode {config['mode']!r} is not available: only 'local' (MMRec's default); "
                                     "'global' needs the sparsesvd package's truncated SVD")
        d, f = config["embedding_size"], config["feat_embed_dim"]
        if d != f:
            raise RecBoleRobustError(f"PGL concatenates user and item blocks: embedding_size ({d}) must equal "
                                     f"feat_embed_dim ({f})")
        self.n_mm_layers, self.reg_weight = config["n_mm_layers"], config["reg_weight"]
        self.modalities = config["modalities"] or dataset.item_features.modalities
        device = torch.device(config["device"])
        self.encoder = LightGCNEncoder(dataset, config["n_ui_layers"], device)
        users, items = (t.to(device) for t in dataset.interaction_edges())
        self.pruning = EdgePruning(users, items, self.n_users, self.n_items, 1 - KEEP)
        self.principal = None  # this epoch's principal subgraph (pre_epoch_processing)
        image = {"image": config["mm_image_weight"]} if "image" in self.modalities and len(self.modalities) > 1 else {}
        features = {m: dataset.item_features[m].to(device) for m in self.modalities}
        graph = mixed_knn_graph(features, modality_weights(image, self.modalities), config["knn_k"])
        self.register_buffer("mm_adj", graph, persistent=False)
        self.register_buffer("mm_adj_t", csr_transpose(graph), persistent=False)  # kNN is not symmetric

        self.user_embeddings = nn.ModuleDict({m: nn.Embedding(self.n_users, d) for m in self.modalities})
        for embedding in self.user_embeddings.values():
            nn.init.xavier_uniform_(embedding.weight)
        self.modality_embeddings = nn.ModuleDict({
            m: nn.Embedding.from_pretrained(dataset.item_features[m].clone(), freeze=False) for m in self.modalities})
        self.projections = nn.ModuleDict({m: nn.Linear(dataset.item_features[m].shape[1], f) for m in self.modalities})
        self.view_dropout = nn.Dropout(config["dropout"])
        self._full_sort_cache = FullSortCache()
        self.perturbation_targets = {**{f"user_embeddings.{m}.weight": "row" for m in self.modalities},
                                     **{f"modality_embeddings.{m}.weight": "row" for m in self.modalities}}

    def modality_location(self, modality):
        return f"modality_embeddings.{modality}.weight", slice(None)

    def pre_epoch_processing(self):
        self.principal = self.pruning(True)

    def forward(self, adjacency=None):
        users = torch.cat([self.user_embeddings[m].weight for m in self.modalities], dim=1)
        items = torch.cat([F.normalize(self.projections[m](self.modality_embeddings[m].weight))
                           for m in self.modalities], dim=1)
        h = items
        for _ in range(self.n_mm_layers):
            h = graph_product(self.mm_adj, h, self.mm_adj_t)
        users, propagated = self.encoder(users, items, adjacency)
        return users, propagated + h

    def propagate(self):
        return self.forward()  # evaluation: the whole graph

    def training_propagation(self):
        return self.forward(self.principal)  # None before the first epoch's sampling: the whole graph

    def calculate_loss(self, interaction):
        user, pos, neg = interaction[self.USER_ID], interaction[self.ITEM_ID], interaction[self.NEG_ITEM_ID]
        users, items = self.training_propagation()
        u, p = users[user], items[pos]
        loss = self.bpr(u, p, items[neg])
        if self.reg_weight:
            drop = self.view_dropout
            loss = loss + self.reg_weight * (info_nce(drop(u), drop(u)) + info_nce(drop(p), drop(p))) / 2
        return loss
