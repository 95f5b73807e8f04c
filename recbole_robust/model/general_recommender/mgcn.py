r"""
MGCN
################################################
Reference:
    Penghang Yu, Zhiyi Tan, Guanming Lu and Bing-Kun Bao. "Multi-View Graph Convolutional Network for Multimedia
    Recommendation." in ACM MM 2023. Authors' code: github.com/demonph10/MGCN; MMRec's port (enoche/MMRec
    ``src/models/mgcn.py``), whose defaults are used.

Three views of the items, then a fusion:

* **behaviour-guided purifier** (eq. 1): each modality's features ``f^m`` (trainable, initialised with the dataset's
  features) are projected, ``W_m f^m + b_m``, and gate the item ID embeddings: ``e^m_i = e_i * sigmoid(W_g (W_m f^m_i
  + b_m) + b_g)``;
* **user-item view** (eq. 2): LightGCN over the training graph, the mean of ``n_ui_layers`` propagations (the
  content embeddings ``E^id``);
* **item-item view** (eq. 3-4): ``e^m`` propagated ``n_layers`` times over each modality's item kNN graph (``knn_k``
  nearest items by the cosine similarity of the raw features, weighted by it, symmetrically normalised; built once,
  as MMRec caches it), users aggregate their items through the normalised user-item block ``R`` of the training
  graph;
* **behaviour-aware fuser** (eq. 5-7): attention over the modalities, ``alpha = softmax(q^T tanh(W_q e^m + b_q))``,
  gives the common part ``e^c = sum_m alpha_m e^m``; each modality's specific part ``e^m - e^c`` is gated by the
  user-item view (``sigmoid(W_p^m E^id + b)``); the side embedding is their mean with ``e^c`` and the final
  embedding is ``E^id + side``.

Loss (eq. 8-10): BPR on the final embeddings, ``reg_weight`` x half the squared norms of the batch's final embeddings
over the batch size (MMRec's form), and ``cl_loss`` x InfoNCE (temperature 0.2) between the side and the ID views of
the batch's positive items and of its users.

Where this port differs: any number of modalities (MMRec's code names image and text; with two modalities the
computation is the same); the item kNN graph is built in blocks (``data.graphs.weighted_knn``), never as a dense
n_items x n_items matrix; the user-item graph carries the MG release's degree offset 1e-7 (``data.graphs``); MMRec's
learning-rate schedule ``[0.96, 50]`` (x0.96 every 50 epochs) is not applied (RecBole has no schedule setting;
within the 50 epochs of the MG preset it changes the rate by at most 4%).
"""
import torch
import torch.nn.functional as F
from recbole.model.abstract_recommender import GeneralRecommender
from recbole.utils import InputType
from torch import nn

from recbole_robust.data.graphs import csr_transpose, similarity_knn_graph, user_item_block
from recbole_robust.model.cache import BPRPropagation, FullSortCache
from recbole_robust.model.layers import LightGCNEncoder, exp_product_sums, graph_product

TEMPERATURE = 0.2


def info_nce(view1, view2, rows=None, temperature=TEMPERATURE, candidates=None, reduction="mean"):
    """InfoNCE of the paired rows ``rows`` of two views against ``candidates`` (default: the batch's rows of
    ``view2``), averaged over the batch's rows (MGCN, SMORE, PGL) or summed (``reduction="sum"``: LGMRec's
    ``ssl_triple_loss``); ``rows=None``: ``view1`` and ``view2`` are the batch's rows themselves.

    A batch repeats users and items (TikTok's batches of 2,048 interactions hold about 690 distinct users and 1,360
    distinct items): each distinct row is computed once and weighted by its count, as a row and, in-batch, as a
    candidate; the loss and its gradient are the same sums over the batch, in another order (tested against MMRec's
    form). On a GPU ``torch.unique`` waits for the device, as RecBole's loop does once a batch (``loss.item()``).

    The rows are unit vectors, so every logit lies in [-1/temperature, 1/temperature] and ``exp`` cannot overflow:
    no max is subtracted, and the temperature scales one view's rows before the product."""
    counts = None
    if rows is not None:
        rows, counts = torch.unique(rows, return_counts=True)
        counts = counts.to(view1.dtype)
        view1, view2 = view1[rows], view2[rows]
    n = view1.shape[0] if counts is None else counts.sum()
    view1 = F.normalize(view1, dim=1) / temperature
    view2 = F.normalize(view2, dim=1)
    if candidates is None:
        candidates, col_weights = view2, counts
    else:
        candidates, col_weights = F.normalize(candidates, dim=1), None
    terms = exp_product_sums(view1, candidates, col_weights).log() - (view1 * view2).sum(-1)
    loss = terms.sum() if counts is None else (terms * counts).sum()
    return loss if reduction == "sum" else loss / n


class SideViewLoss(BPRPropagation):
    """MGCN's and SMORE's ID and side views and loss, for a model whose ``views(rows)`` returns (final, side view,
    ID view), each [n_users + n_items, d] or only its ``rows``: ``setup_views`` makes what both share (the user-item
    block R, the ID embeddings, the trainable modality features and their projections); the loss is BPR,
    ``reg_weight`` x half the squared norms of the batch's final embeddings / batch size (MMRec's form), and
    ``cl_weight`` x InfoNCE between the side and ID views of the batch's positive items and of its users.

    Training computes the graph propagations over all nodes, then the per-row part of the views (attention, gates,
    fusion) for the batch's distinct users and items only (on TikTok about 3,400 of the 16,020 rows): the loss
    reads no other row, so it and its gradients are the same (tested)."""

    def setup_views(self, dataset, d, device):
        users, items = (t.to(device) for t in dataset.interaction_edges())
        block = user_item_block(users, items, self.n_users, self.n_items)  # R of the normalised graph
        self.register_buffer("user_item", block, persistent=False)
        self.register_buffer("user_item_t", csr_transpose(block), persistent=False)
        self.user_embedding = nn.Embedding(self.n_users, d)
        self.item_id_embedding = nn.Embedding(self.n_items, d)
        nn.init.xavier_uniform_(self.user_embedding.weight)
        nn.init.xavier_uniform_(self.item_id_embedding.weight)
        self.modality_embeddings = nn.ModuleDict({
            m: nn.Embedding.from_pretrained(dataset.item_features[m].clone(), freeze=False) for m in self.modalities})
        self.projections = nn.ModuleDict({m: nn.Linear(dataset.item_features[m].shape[1], d) for m in self.modalities})
        self._full_sort_cache = FullSortCache()
        self.perturbation_targets = {
            "user_embedding.weight": "row", "item_id_embedding.weight": "row",
            **{f"modality_embeddings.{m}.weight": "row" for m in self.modalities}}

    def modality_location(self, modality):
        return f"modality_embeddings.{modality}.weight", slice(None)

    def forward(self):
        final, _, _ = self.views()
        return final[:self.n_users], final[self.n_users:]

    def calculate_loss(self, interaction):
        user, pos, neg = interaction[self.USER_ID], interaction[self.ITEM_ID], interaction[self.NEG_ITEM_ID]
        b = len(user)
        rows, inverse = torch.unique(torch.cat([user, self.n_users + pos, self.n_users + neg]), return_inverse=True)
        final, side, content = self.views(rows)
        user, pos = inverse[:b], inverse[b:2 * b]  # positions in the views' rows
        u, p, n = final[user], final[pos], final[inverse[2 * b:]]
        regulariser = 0.5 * (u.pow(2).sum() + p.pow(2).sum() + n.pow(2).sum()) / self.batch_size
        contrast = info_nce(side, content, pos) + info_nce(side, content, user)
        return self.bpr(u, p, n) + self.reg_weight * regulariser + self.cl_weight * contrast


class MGCN(SideViewLoss, GeneralRecommender):
    r"""MGCN: purified modality views over item kNN graphs, fused with the user-item view by attention."""

    input_type = InputType.PAIRWISE
    needs_item_features = True

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        self.embedding_size = config["embedding_size"]
        self.n_ui_layers, self.n_layers = config["n_ui_layers"], config["n_layers"]
        self.knn_k, self.reg_weight, self.cl_weight = config["knn_k"], config["reg_weight"], config["cl_loss"]
        self.batch_size = config["train_batch_size"]
        self.modalities = config["modalities"] or dataset.item_features.modalities
        device = torch.device(config["device"])
        d = self.embedding_size

        self.encoder = LightGCNEncoder(dataset, self.n_ui_layers, device)
        self.setup_views(dataset, d, device)
        for m in self.modalities:  # each modality's item kNN graph, from the raw features, built once
            graph = similarity_knn_graph(dataset.item_features[m].to(device), self.knn_k)
            self.register_buffer(f"item_graph_{m}", graph, persistent=False)
            self.register_buffer(f"item_graph_t_{m}", csr_transpose(graph), persistent=False)

        self.purifiers = nn.ModuleDict({m: nn.Sequential(nn.Linear(d, d), nn.Sigmoid()) for m in self.modalities})
        self.preferences = nn.ModuleDict({m: nn.Sequential(nn.Linear(d, d), nn.Sigmoid()) for m in self.modalities})
        self.query = nn.Sequential(nn.Linear(d, d), nn.Tanh(), nn.Linear(d, 1, bias=False))

    def views(self, rows=None):
        """``(final, side, ID view)``, [n_users + n_items, d] each (users first), or their ``rows``."""
        ids = self.item_id_embedding.weight
        content = torch.cat(self.encoder(self.user_embedding.weight, ids))
        modality_views = []
        for m in self.modalities:
            gate = self.purifiers[m](self.projections[m](self.modality_embeddings[m].weight))
            h = ids * gate
            for _ in range(self.n_layers):
                h = graph_product(getattr(self, f"item_graph_{m}"), h, getattr(self, f"item_graph_t_{m}"))
            modality_views.append(torch.cat([graph_product(self.user_item, h, self.user_item_t), h]))
        if rows is not None:
            content, modality_views = content[rows], [view[rows] for view in modality_views]
        stacked = torch.stack(modality_views)                       # [M, n, d]
        weights = torch.softmax(self.query(stacked).squeeze(-1), dim=0)  # [M, n]: attention over the modalities
        common = (weights.unsqueeze(-1) * stacked).sum(0)
        side = common + sum(self.preferences[m](content) * (view - common)
                            for m, view in zip(self.modalities, modality_views))
        side = side / (len(self.modalities) + 1)
        return content + side, side, content
