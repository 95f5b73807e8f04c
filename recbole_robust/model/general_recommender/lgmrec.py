r"""
LGMRec
################################################
Reference:
    Zhiqiang Guo, Jianjun Li, Guohui Li, Chaoyang Wang, Si Shi and Bin Ruan. "LGMRec: Local and Global Graph Learning
    for Multimodal Recommendation." in AAAI 2024. Authors' code: github.com/georgeguo-cn/LGMRec; MMRec's port
    (enoche/MMRec ``src/models/lgmrec.py``), whose defaults (its Baby settings) are used.

* **collaborative graph embedding** (CGE, eq. 1): LightGCN over the training graph (``n_ui_layers``, mean of layers);
* **modality graph embedding** (MGE, eq. 2-3): each modality's frozen features projected (``W_m``, no bias), users
  start from the mean of their items' projected features, then ``n_mm_layers`` propagations over the same
  normalised graph; the local embedding is CGE + the sum over modalities of the row-normalised MGE;
* **global hypergraph embedding** (GHE, eq. 4-7): ``hyper_num`` hyperedges per modality; an item's memberships are
  ``gumbel_softmax(f^m H_m, tau = 0.2)``, a user's ``gumbel_softmax(R f^m H_m)`` (R the binary interactions); the
  CGE item embeddings pass ``n_hyper_layer`` times through the hyperedges (with dropout ``1 - keep_rate`` on the
  memberships); GHE is the sum over modalities;
* final embedding: local + ``alpha`` x row-normalised GHE; loss: BPR + ``cl_weight`` x the hypergraph contrastive
  loss (InfoNCE, tau 0.2, summed over the batch, between two modalities' hyperedge embeddings of the batch's users
  and of its positive items) + ``reg_weight`` x the (unsquared) norms of the batch's final embeddings over the batch.

Where this port differs: any number of modalities (MMRec's names image and text; the contrastive loss pairs each
modality with the next, cyclically, which for two modalities is MMRec's pair; one modality has no contrastive term);
the Gumbel noise is drawn in evaluation too, as MMRec does, once per evaluation (the propagation is cached,
``model/cache.py``), so ``predict`` and ``full_sort_predict`` agree; the hyperedge memberships are dense
[n_items, hyper_num] as in MMRec (small: ``hyper_num`` is 4).
"""
import torch
import torch.nn.functional as F
from recbole.model.abstract_recommender import GeneralRecommender
from recbole.utils import InputType
from torch import nn

from recbole_robust.data.graphs import csr_transpose
from recbole_robust.model.cache import BPRPropagation, FullSortCache
from recbole_robust.model.general_recommender.mgcn import info_nce
from recbole_robust.model.layers import LightGCNEncoder, graph_product

TAU = 0.2


class LGMRec(BPRPropagation, GeneralRecommender):
    r"""LGMRec: collaborative + modality graph embeddings (local) and hypergraph embeddings (global)."""

    input_type = InputType.PAIRWISE
    needs_item_features = True

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        d, f = config["embedding_size"], config["feat_embed_dim"]
        self.n_mm_layers, self.n_hyper_layer = config["n_mm_layers"], config["n_hyper_layer"]
        self.hyper_num, self.keep_rate, self.alpha = config["hyper_num"], config["keep_rate"], config["alpha"]
        self.cl_weight, self.reg_weight = config["cl_weight"], config["reg_weight"]
        self.modalities = config["modalities"] or dataset.item_features.modalities
        device = torch.device(config["device"])

        self.encoder = LightGCNEncoder(dataset, config["n_ui_layers"], device)
        users, items = (t.to(device) for t in dataset.interaction_edges())
        ones = torch.ones(len(users), device=device)
        interactions = torch.sparse_coo_tensor(torch.stack([users, items]), ones, (self.n_users, self.n_items))
        self.register_buffer("interactions", interactions.coalesce().to_sparse_csr(), persistent=False)
        self.register_buffer("interactions_t", csr_transpose(self.interactions), persistent=False)
        degree = torch.zeros(self.n_users, device=device).index_add_(0, users, ones)
        self.register_buffer("inverse_degree", (1.0 / (degree + 1e-7)).unsqueeze(1), persistent=False)

        self.user_embedding = nn.Embedding(self.n_users, d)
        self.item_id_embedding = nn.Embedding(self.n_items, d)
        nn.init.xavier_uniform_(self.user_embedding.weight)
        nn.init.xavier_uniform_(self.item_id_embedding.weight)
        for m in self.modalities:  # frozen features, as MMRec's from_pretrained(freeze=True)
            self.register_buffer(f"features_{m}", dataset.item_features[m].to(device), persistent=False)
        width = {m: dataset.item_features[m].shape[1] for m in self.modalities}
        self.projections = nn.ParameterDict({
            m: nn.Parameter(nn.init.xavier_uniform_(torch.zeros(width[m], f))) for m in self.modalities})
        self.hyperedges = nn.ParameterDict({
            m: nn.Parameter(nn.init.xavier_uniform_(torch.zeros(width[m], self.hyper_num))) for m in self.modalities})
        self.dropout = nn.Dropout(p=1 - self.keep_rate)
        self._full_sort_cache = FullSortCache()
        self.perturbation_targets = {"user_embedding.weight": "row", "item_id_embedding.weight": "row"}

    def _propagate(self, x, layers):
        for _ in range(layers):
            x = graph_product(self.encoder.norm_adj, x)
        return x

    def _modality_graph(self, m):
        items = getattr(self, f"features_{m}") @ self.projections[m]
        users = graph_product(self.interactions, items, self.interactions_t) * self.inverse_degree
        return self._propagate(torch.cat([users, items]), self.n_mm_layers)

    def _hypergraph(self, m, items):
        item_hyper = getattr(self, f"features_{m}") @ self.hyperedges[m]
        user_hyper = graph_product(self.interactions, item_hyper, self.interactions_t)
        item_hyper, user_hyper = (F.gumbel_softmax(h, TAU, dim=1, hard=False) for h in (item_hyper, user_hyper))
        item_hyper, user_hyper = self.dropout(item_hyper), self.dropout(user_hyper)
        out_items = items
        for _ in range(self.n_hyper_layer):
            latent = item_hyper.T @ out_items
            out_items, out_users = item_hyper @ latent, user_hyper @ latent
        return out_users, out_items

    def views(self):
        """``(users, items, [(hyper users, hyper items) per modality])``."""
        collaborative = torch.cat(self.encoder(self.user_embedding.weight, self.item_id_embedding.weight))
        local = collaborative + sum(F.normalize(self._modality_graph(m)) for m in self.modalities)
        hyper = [self._hypergraph(m, collaborative[self.n_users:]) for m in self.modalities]
        global_ = sum(torch.cat(pair) for pair in hyper)
        final = local + self.alpha * F.normalize(global_)
        return final[:self.n_users], final[self.n_users:], hyper

    def forward(self):
        users, items, _ = self.views()
        return users, items

    def calculate_loss(self, interaction):
        user, pos, neg = interaction[self.USER_ID], interaction[self.ITEM_ID], interaction[self.NEG_ITEM_ID]
        users, items, hyper = self.views()
        u, p, n = users[user], items[pos], items[neg]
        loss = self.bpr(u, p, n) + self.reg_weight * (u.norm() + p.norm() + n.norm()) / len(n)
        if len(hyper) > 1:
            pairs = zip(hyper, hyper[1:] + hyper[:1]) if len(hyper) > 2 else [(hyper[0], hyper[1])]
            loss = loss + self.cl_weight * sum(  # MMRec's ssl_triple_loss: against all users / items, summed
                info_nce(a_u, b_u, user, TAU, b_u, "sum") + info_nce(a_i, b_i, pos, TAU, b_i, "sum")
                for (a_u, a_i), (b_u, b_i) in pairs)
        return loss
