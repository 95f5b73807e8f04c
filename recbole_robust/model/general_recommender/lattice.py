r"""
LATTICE
################################################
Reference:
    Jinghao Zhang, Yanqiao Zhu, Qiang Liu, Shu Wu, Shuhui Wang and Liang Wang. "Mining Latent Structures for
    Multimedia Recommendation." in ACM MM 2021.

Item-item structure learning (section 3.1), as the authors' code (MMRec's ``lattice.py``) computes it:

* Per modality m, the initial graph S_m is the kNN graph (``knn_k``, cosine) of the raw features with the
  similarities as edge values, normalised D^-1/2 S D^-1/2 (D: row sums); the learned graph is the same
  construction on the projected features W_m f_i (the features are trainable embeddings initialised from
  the files; W_m is trained).
* Fusion (eq. 6-8): A = (1 - ``lambda_coeff``) norm(sum_m a_m S~_m) + ``lambda_coeff`` sum_m a_m S_m, with
  a = softmax of trained modality weights. As in the authors' code the learned graph is rebuilt, with
  gradient, on the first batch of every epoch and used without gradient by the epoch's other batches.
* Items get h = A^``n_layers`` e_i (ID embeddings), L2-normalised, added to the output of the
  collaborative filtering backbone (eq. 9-10): LightGCN-style propagation over D^-1 (A_ui + I)
  (row-normalised, with self-loops, as the authors' code builds it), ``n_ui_layers`` layers, mean of layers.
* Loss: BPR (mean) plus ``reg_weight`` times half the squared norms of the batch's final vectors divided
  by the batch size.

The authors' code scales the learning rate by 0.96 per 50 epochs (``learning_rate_scheduler``); RecBole
has no such default and it is left out. Every modality of the dataset is used (``modalities`` selects).
"""
import torch
import torch.nn.functional as F
from torch import nn

from recbole.model.abstract_recommender import GeneralRecommender
from recbole.utils import InputType

from recbole_robust.model.cache import FullSortCache, PropagatedScores
from recbole_robust.data.graphs import csr_transpose, normalized_sum, weighted_knn
from recbole_robust.model.layers import graph_product, sparse_product


class LATTICE(PropagatedScores, GeneralRecommender):
    r"""LATTICE: learned item-item graphs from multimodal features on top of a LightGCN backbone."""

    input_type = InputType.PAIRWISE
    needs_item_features = True

    def __init__(self, config, dataset):
        super().__init__(config, dataset)

        # load parameters info
        self.embedding_size = config["embedding_size"]
        self.knn_k = config["knn_k"]
        self.lambda_coeff = config["lambda_coeff"]
        self.n_layers = config["n_layers"]
        self.n_ui_layers = config["n_ui_layers"]
        self.reg_weight = config["reg_weight"]
        self.modalities = config["modalities"] or dataset.item_features.modalities

        # define graphs: the user-item graph D^-1 (A + I), and each modality's initial kNN graph
        users, items = dataset.interaction_edges()
        n = self.n_users + self.n_items
        loops = torch.arange(n)
        rows = torch.cat([users, items + self.n_users, loops])
        cols = torch.cat([items + self.n_users, users, loops])
        degree = torch.zeros(n).index_add_(0, rows, torch.ones(len(rows)))
        adjacency = torch.sparse_coo_tensor(torch.stack([rows, cols]), 1.0 / degree[rows], (n, n)).coalesce()
        self.register_buffer("ui_adj", adjacency.to_sparse_csr(), persistent=False)
        self.register_buffer("ui_adj_t", csr_transpose(self.ui_adj), persistent=False)  # row-normalised: not symmetric
        for m in self.modalities:
            indices, values = weighted_knn(dataset.item_features[m], self.knn_k)
            initial = normalized_sum([(1.0, indices, values)], self.n_items)
            self.register_buffer(f"initial_{m}_indices", initial.indices(), persistent=False)
            self.register_buffer(f"initial_{m}_values", initial.values(), persistent=False)

        # define layers
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
        self.modality_weight = nn.Parameter(torch.full((len(self.modalities),), 1.0 / len(self.modalities)))
        self.item_adj = None  # the epoch's learned item-item graph, without gradient after its first batch
        self._full_sort_cache = FullSortCache()
        self.perturbation_targets = {
            "user_embedding.weight": "row", "item_id_embedding.weight": "row",
            **{f"modality_embeddings.{m}.weight": "row" for m in self.modalities},
        }

    def modality_location(self, modality):
        return f"modality_embeddings.{modality}.weight", slice(None)

    def pre_epoch_processing(self):
        self.item_adj = None  # rebuilt, with gradient, by the epoch's first batch

    def _item_graph(self):
        """A = (1 - lambda) norm(sum_m a_m S~_m) + lambda sum_m a_m S_m (sparse COO, differentiable)."""
        a = F.softmax(self.modality_weight, dim=0)
        learned = normalized_sum([
            (a[j], *weighted_knn(self.modality_projections[m](self.modality_embeddings[m].weight), self.knn_k))
            for j, m in enumerate(self.modalities)], self.n_items)
        parts = [(1 - self.lambda_coeff, learned.indices(), learned.values())] + [
            (self.lambda_coeff * a[j], getattr(self, f"initial_{m}_indices"), getattr(self, f"initial_{m}_values"))
            for j, m in enumerate(self.modalities)]
        return torch.sparse_coo_tensor(torch.cat([i for _, i, _ in parts], 1),
                                       torch.cat([w * v for w, _, v in parts]),
                                       (self.n_items, self.n_items), check_invariants=False).coalesce()

    def forward(self, item_adj=None):
        item_adj = self._item_graph() if item_adj is None else item_adj
        h = self.item_id_embedding.weight
        for _ in range(self.n_layers):
            h = sparse_product(item_adj, h)
        ego = torch.cat([self.user_embedding.weight, self.item_id_embedding.weight])
        layers = [ego]
        for _ in range(self.n_ui_layers):
            ego = graph_product(self.ui_adj, ego, self.ui_adj_t)
            layers.append(ego)
        out = torch.stack(layers).mean(0)
        return out[: self.n_users], out[self.n_users:] + F.normalize(h, dim=1)

    def _training_forward(self):
        if self.item_adj is None:  # the epoch's first batch: the graph with gradient, kept without it
            item_adj = self._item_graph()
            self.item_adj = item_adj.detach()
            return self.forward(item_adj)
        return self.forward(self.item_adj)

    def rec_loss(self, interaction):
        return self._losses(interaction)[0]

    def _losses(self, interaction):
        user, pos, neg = interaction[self.USER_ID], interaction[self.ITEM_ID], interaction[self.NEG_ITEM_ID]
        users, items = self._training_forward()
        u, p, n = users[user], items[pos], items[neg]
        bpr = -F.logsigmoid((u * p).sum(-1) - (u * n).sum(-1)).mean()
        return bpr, 0.5 * (u.pow(2).sum() + p.pow(2).sum() + n.pow(2).sum()) / len(user)

    def calculate_loss(self, interaction):
        bpr, reg = self._losses(interaction)
        return bpr + self.reg_weight * reg
