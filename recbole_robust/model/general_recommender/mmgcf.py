r"""
MMGCF
################################################
Reference:
    MMGCF, "Multimodal Graph Collaborative Filtering", as MMRec (enoche/MMRec ``src/models/mmgcf.py``) defines it: a
    late-fusion baseline (no paper of its own is cited there); MMRec's defaults (first value of each grid) are used.

LightGCN over the training graph (``n_ui_layers``, mean of the layers), with degree-sensitive edge dropout before
every epoch (``dropout``: the share of edges dropped, sampled by ``d_u^-1/2 d_i^-1/2`` as FREEDOM's pruning;
evaluation uses the whole graph). The propagated item embeddings are fused late with each modality's frozen features
projected by ``W_m f^m + b_m`` (``feat_embed_dim``):

* ``fusion_mode``: ``mean`` | ``sum`` | ``concat`` (concatenation, then a linear layer back to ``embedding_size``);
* ``weighting``: ``equal`` (the modalities are fused first, then with the ID embedding), ``alpha`` (a learned gate
  ``a = sigmoid(w)``: the ID embedding times ``a``, each modality times ``1 - a``, fused together), ``normalized``
  (every part L2-normalised, the ID part times the number of modalities).

Loss: BPR + ``reg_weight`` x the squared norms of the batch's ego (unpropagated) embeddings / (2 x batch size).

Where this port differs: before the first epoch's dropout (MMRec would fail there) the whole graph is used.
"""
import torch
import torch.nn.functional as F
from recbole.model.abstract_recommender import GeneralRecommender
from recbole.utils import InputType
from torch import nn

from recbole_robust.errors import RecBoleRobustError
from recbole_robust.model.cache import BPRPropagation, FullSortCache
from recbole_robust.model.layers import EdgePruning, LightGCNEncoder

FUSIONS, WEIGHTINGS = ("mean", "sum", "concat"), ("equal", "alpha", "normalized")


class MMGCF(BPRPropagation, GeneralRecommender):
    r"""MMGCF: LightGCN item embeddings fused late with projected modality features."""

    input_type = InputType.PAIRWISE
    needs_item_features = True

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        d, f = config["embedding_size"], config["feat_embed_dim"]
        self.fusion, self.weighting, self.reg_weight = config["fusion_mode"], config["weighting"], config["reg_weight"]
        if self.fusion not in FUSIONS or self.weighting not in WEIGHTINGS:
            raise RecBoleRobustError(f"MMGCF: fusion_mode must be one of {', '.join(FUSIONS)} and weighting one of "
                                     f"{', '.join(WEIGHTINGS)}, got {self.fusion!r} and {self.weighting!r}")
        if self.fusion != "concat" and d != f:
            raise RecBoleRobustError(f"MMGCF: fusion_mode {self.fusion} adds embeddings element-wise: embedding_size "
                                     f"({d}) must equal feat_embed_dim ({f}), or use concat")
        self.modalities = config["modalities"] or dataset.item_features.modalities
        device = torch.device(config["device"])
        self.encoder = LightGCNEncoder(dataset, config["n_ui_layers"], device)
        users, items = (t.to(device) for t in dataset.interaction_edges())
        self.pruning = EdgePruning(users, items, self.n_users, self.n_items, config["dropout"])
        self.masked_adj = None
        self.user_embedding = nn.Embedding(self.n_users, d)
        self.item_id_embedding = nn.Embedding(self.n_items, d)
        nn.init.xavier_uniform_(self.user_embedding.weight)
        nn.init.xavier_uniform_(self.item_id_embedding.weight)
        for m in self.modalities:  # frozen, as MMRec's from_pretrained(freeze=True)
            self.register_buffer(f"features_{m}", dataset.item_features[m].to(device), persistent=False)
        self.projections = nn.ModuleDict({m: nn.Linear(dataset.item_features[m].shape[1], f) for m in self.modalities})
        n = len(self.modalities)
        if self.weighting == "alpha":
            self.alpha = nn.Parameter(torch.tensor(0.0))
        if self.fusion == "concat":
            self.all_concat = nn.Linear(d + n * f, d)
            if n > 1:
                self.modality_concat = nn.Linear(n * f, f)
            self.id_concat = nn.Linear(d + f, d)
        self._full_sort_cache = FullSortCache()
        self.perturbation_targets = {"user_embedding.weight": "row", "item_id_embedding.weight": "row"}

    def pre_epoch_processing(self):
        self.masked_adj = self.pruning(True)  # None when dropout is 0: the whole graph

    def _fuse(self, tensors, concat_layer):
        if self.fusion == "mean":
            return torch.stack(tensors).mean(0)
        if self.fusion == "sum":
            return torch.stack(tensors).sum(0)
        return concat_layer(torch.cat(tensors, dim=-1))

    def _fused_items(self, items):
        features = [self.projections[m](getattr(self, f"features_{m}")) for m in self.modalities]
        if self.weighting == "alpha":
            a = torch.sigmoid(self.alpha)
            return self._fuse([items * a] + [x * (1 - a) for x in features], getattr(self, "all_concat", None))
        if self.weighting == "normalized":
            parts = [F.normalize(items) * len(features)] + [F.normalize(x) for x in features]
            return self._fuse(parts, getattr(self, "all_concat", None))
        modalities = features[0] if len(features) == 1 else self._fuse(features, getattr(self, "modality_concat", None))
        return self._fuse([items, modalities], getattr(self, "id_concat", None))

    def forward(self, adjacency=None):
        users, items = self.encoder(self.user_embedding.weight, self.item_id_embedding.weight, adjacency)
        return users, self._fused_items(items)

    def training_propagation(self):
        return self.forward(self.masked_adj)

    def calculate_loss(self, interaction):
        user, pos, neg = interaction[self.USER_ID], interaction[self.ITEM_ID], interaction[self.NEG_ITEM_ID]
        users, items = self.training_propagation()
        regulariser = (self.user_embedding.weight[user].pow(2).sum() + self.item_id_embedding.weight[pos].pow(2).sum()
                       + self.item_id_embedding.weight[neg].pow(2).sum()) / (2 * len(user))
        return self.bpr(users[user], items[pos], items[neg]) + self.reg_weight * regulariser
