r"""
FREEDOM
################################################
Reference:
    Xin Zhou and Zhiqi Shen. "A Tale of Two Graphs: Freezing and Denoising Graph Structures for
    Multimodal Recommendation." in ACM MM 2023 (arXiv:2211.06924, 2022).

* Frozen item-item graph: a kNN graph (``knn_k``, cosine) per modality from the raw features,
  symmetrically normalised, combined with ``modality_weights`` (default: equal; the paper's
  image/text setting is ``{image: 0.1, text: 0.9}``), built once with torch and never trained. The
  information-adjustment analysis rebuilds it from the adjusted features (``adjusted_features``):
  at inference the features reach the ranking only through this graph.
* Denoised user-item graph: before every epoch ``dropout`` of the edges are dropped, sampled with
  probability proportional to d_u^-1/2 d_i^-1/2 (degree-sensitive pruning); evaluation uses the full
  normalised graph.
* Items: i = LightGCN(user-item graph, ``n_ui_layers``, mean of layers) + A_mm^``n_mm_layers`` e_i;
  users: LightGCN output. Score y_ui = u . i.
* Loss: BPR + ``reg_weight`` * sum over modalities of BPR(u, W_m f_i) with the modality features
  projected to the embedding space (``feat_embed_dim``). As in the authors' code the modality
  features are trainable embeddings initialised from the files.

``pre_epoch_processing`` is called by the plugin's Trainer at the start of every epoch.
"""
import torch
from torch import nn

from recbole.model.abstract_recommender import GeneralRecommender
from recbole.model.loss import BPRLoss
from recbole.utils import InputType

from recbole_robust.model.cache import FullSortCache, PropagatedScores
from recbole_robust.data.graphs import csr_transpose, mixed_knn_graph, modality_weights
from recbole_robust.model.layers import EdgePruning, LightGCNEncoder, graph_product


class FREEDOM(PropagatedScores, GeneralRecommender):
    r"""FREEDOM: frozen item-item kNN graph + degree-sensitive pruning of the user-item graph."""

    input_type = InputType.PAIRWISE
    needs_item_features = True

    def __init__(self, config, dataset):
        super().__init__(config, dataset)

        # load parameters info
        self.embedding_size = config["embedding_size"]
        self.n_ui_layers = config["n_ui_layers"]
        self.n_mm_layers = config["n_mm_layers"]
        self.reg_weight = config["reg_weight"]
        self.modalities = config["modalities"] or dataset.item_features.modalities
        self.modality_weights = modality_weights(config["modality_weights"], self.modalities)

        # define layers and loss; the graphs are built on the run's device (a GPU builds the kNN graph
        # of thousands of items in milliseconds, the CPU in seconds)
        device = torch.device(config["device"])
        users, items = (t.to(device) for t in dataset.interaction_edges())
        self.pruning = EdgePruning(users, items, self.n_users, self.n_items, config["dropout"])
        # graphs are CSR: each batch propagates with sparse-dense products (layers.py)
        self.encoder = LightGCNEncoder(dataset, self.n_ui_layers, device)
        self.masked_adj = None  # the pruned graph of the current epoch (pre_epoch_processing)
        self.knn_k = config["knn_k"]
        for m in self.modalities:  # the files' features: the kNN graph is built from them
            self.register_buffer(f"features_{m}", dataset.item_features[m].to(device), persistent=False)
        self.register_buffer("mm_adj", self._item_item_graph(), persistent=False)
        self.register_buffer("mm_adj_t", csr_transpose(self.mm_adj), persistent=False)  # kNN is not symmetric

        self.user_embedding = nn.Embedding(self.n_users, self.embedding_size)
        self.item_id_embedding = nn.Embedding(self.n_items, self.embedding_size)
        nn.init.xavier_uniform_(self.user_embedding.weight)
        nn.init.xavier_uniform_(self.item_id_embedding.weight)
        self.modality_embeddings = nn.ModuleDict({
            m: nn.Embedding.from_pretrained(dataset.item_features[m].clone(), freeze=False) for m in self.modalities
        })
        self.modality_projections = nn.ModuleDict({
            m: nn.Linear(dataset.item_features[m].shape[1], config["feat_embed_dim"]) for m in self.modalities
        })
        self.bpr_loss_fct = BPRLoss()
        self._full_sort_cache = FullSortCache()
        self.perturbation_targets = {
            "user_embedding.weight": "row", "item_id_embedding.weight": "row",
            **{f"modality_embeddings.{m}.weight": "row" for m in self.modalities},
        }

    def _item_item_graph(self, features=None):
        features = {m: getattr(self, f"features_{m}") for m in self.modalities} | (features or {})
        return mixed_knn_graph(features, self.modality_weights, self.knn_k)

    def modality_location(self, modality):
        return f"modality_embeddings.{modality}.weight", slice(None)

    def adjusted_features(self, modality, items, donors):
        """Tensors that change when ``items`` get the ``modality`` features of ``donors`` (information
        adjustment): the modality embeddings and the frozen kNN graph, rebuilt from the adjusted
        features as a FREEDOM loaded on the adjusted data would build it."""
        raw = getattr(self, f"features_{modality}").clone()
        raw[items] = raw[donors]
        embedding = self.modality_embeddings[modality].weight.detach().clone()
        embedding[items] = embedding[donors]
        graph = self._item_item_graph({modality: raw})
        return {f"modality_embeddings.{modality}.weight": embedding, "mm_adj": graph, "mm_adj_t": csr_transpose(graph)}

    def pre_epoch_processing(self):
        """Degree-sensitive edge pruning: keep (1 - dropout) of the edges, sampled by d_u^-1/2 d_i^-1/2."""
        self.masked_adj = self.pruning()

    def _training_graph(self):
        return self.encoder.norm_adj if self.masked_adj is None else self.masked_adj

    def forward(self, adj):
        h = self.item_id_embedding.weight
        for _ in range(self.n_mm_layers):
            h = graph_product(self.mm_adj, h, self.mm_adj_t)
        users, items = self.encoder(self.user_embedding.weight, self.item_id_embedding.weight, adj)
        return users, items + h

    def _bpr(self, u, pos, neg):
        return self.bpr_loss_fct((u * pos).sum(-1), (u * neg).sum(-1))

    def rec_loss(self, interaction):
        user, pos, neg = interaction[self.USER_ID], interaction[self.ITEM_ID], interaction[self.NEG_ITEM_ID]
        users, items = self.forward(self._training_graph())
        return self._bpr(users[user], items[pos], items[neg])

    def calculate_loss(self, interaction):
        user, pos, neg = interaction[self.USER_ID], interaction[self.ITEM_ID], interaction[self.NEG_ITEM_ID]
        users, items = self.forward(self._training_graph())
        loss = self._bpr(users[user], items[pos], items[neg])
        for m in self.modalities if self.reg_weight else ():  # no projection work when the term is off
            projected = self.modality_projections[m](self.modality_embeddings[m].weight)
            loss = loss + self.reg_weight * self._bpr(users[user], projected[pos], projected[neg])
        return loss

    def propagate(self):
        return self.forward(self.encoder.norm_adj)
