r"""
SLMRec
################################################
Reference:
    Zhulin Tao, Xiaohao Liu, Yewei Xia, Xiang Wang, Lifang Yang, Xianglin Huang and Tat-Seng Chua.
    "Self-supervised Learning for Multimedia Recommendation." in IEEE TMM 2022.

The fine-and-coarse (FAC) task of the paper, as the authors' code (MMRec's ``slmrec.py``) runs it:

* Views: the ID view (user and item ID embeddings) and one view per modality m (the same user ID
  embeddings, items ``W_m normalize(f_i^m) + b_m``); each view is propagated by LightGCN over the
  training split's user-item graph (``n_layers``, mean of the layers). The views share one graph, so
  the plugin propagates them together as the columns of one matrix (one sparse product per layer).
* Fusion: users u = W_u [u_id; u_1; ...; u_M], items i = W_i [i_id; i_1; ...; i_M] (``concat``).
* Main loss: in-batch softmax (InfoNCE) of the batch's (user, item) pairs, cosine similarities
  divided by ``temp``: every other item of the batch is a user's negative (no sampled negatives).
* FAC loss (``ssl_alpha``): a chain of projections aligns the item's ID view with its modality
  views, fine to coarse: x_1 = g_1(i_id) against h_1(i_m1), x_k = g_k(x_{k-1}) against h_k(i_mk),
  each an in-batch InfoNCE of raw dot products over ``ssl_temp`` (the authors' code does not
  normalise here). The chain follows the dataset's modality order (the paper's visual -> acoustic ->
  textual); as in the authors' code the third level and later ones are half as wide. The release has
  no acoustic features and runs its text at the third level after an unsupervised second projection;
  the plugin uses every modality the dataset has, one level each.
* Score: u . i (the release's sigmoid of it ranks the same).

The authors' code regularises through Adam's ``weight_decay`` (1e-4 in its configuration), which is
RecBole's ``weight_decay`` option here. The feature dropout / masking tasks (FD, FM) are not built.
"""
import torch
import torch.nn.functional as F
from torch import nn

from recbole.model.abstract_recommender import GeneralRecommender
from recbole.utils import InputType

from recbole_robust.model.cache import FullSortCache, PropagatedScores
from recbole_robust.model.layers import LightGCNEncoder


def in_batch_infonce(a, b, temperature):
    """Cross-entropy of each row of ``a`` against the rows of ``b``, its own row being the positive."""
    logits = a @ b.T / temperature
    return F.cross_entropy(logits, torch.arange(len(a), device=a.device))


class SLMRec(PropagatedScores, GeneralRecommender):
    r"""SLMRec (FAC task): LightGCN per view, concatenation fusion, in-batch InfoNCE + fine-to-coarse alignment."""

    input_type = InputType.POINTWISE
    needs_item_features = True

    def __init__(self, config, dataset):
        super().__init__(config, dataset)

        # load parameters info
        d = self.embedding_size = config["embedding_size"]
        self.temp = config["temp"]
        self.ssl_temp = config["ssl_temp"]
        self.ssl_alpha = config["ssl_alpha"]
        self.modalities = config["modalities"] or dataset.item_features.modalities
        n_views = len(self.modalities) + 1

        # define layers
        self.encoder = LightGCNEncoder(dataset, config["n_layers"], torch.device(config["device"]))
        self.user_embedding = nn.Embedding(self.n_users, d)
        self.item_embedding = nn.Embedding(self.n_items, d)
        nn.init.xavier_uniform_(self.user_embedding.weight)
        nn.init.xavier_uniform_(self.item_embedding.weight)
        for m in self.modalities:  # fixed, L2-normalised per item as in the authors' code
            self.register_buffer(f"features_{m}", F.normalize(dataset.item_features[m], dim=1), persistent=False)
        self.dense = nn.ModuleDict({m: nn.Linear(dataset.item_features[m].shape[1], d) for m in self.modalities})
        self.user_fusion = nn.Linear(n_views * d, d)
        self.item_fusion = nn.Linear(n_views * d, d)
        widths = [d if k < 2 else d // 2 for k in range(len(self.modalities))]
        self.anchor_projections = nn.ModuleList(
            nn.Linear(d if k == 0 else widths[k - 1], w) for k, w in enumerate(widths))
        self.modality_projections = nn.ModuleDict(
            {m: nn.Linear(d, w) for m, w in zip(self.modalities, widths)})
        for layer in [*self.dense.values(), self.user_fusion, self.item_fusion, *self.anchor_projections,
                      *self.modality_projections.values()]:
            nn.init.xavier_uniform_(layer.weight)
        self._full_sort_cache = FullSortCache()
        self.perturbation_targets = {
            "user_embedding.weight": "row", "item_embedding.weight": "row",
            **{f"features_{m}": "row" for m in self.modalities},
        }

    def modality_location(self, modality):
        return f"features_{modality}", slice(None)

    def views(self):
        """Propagated views: users [n_users, (M + 1) d], items [n_items, (M + 1) d] (ID view first)."""
        users = self.user_embedding.weight.repeat(1, len(self.modalities) + 1)
        items = torch.cat([self.item_embedding.weight]
                          + [self.dense[m](getattr(self, f"features_{m}")) for m in self.modalities], 1)
        return self.encoder(users, items)

    def forward(self):
        """Fused users [n_users, d] and items [n_items, d]."""
        users, items = self.views()
        return self.user_fusion(users), self.item_fusion(items)

    def _main_loss(self, interaction):
        user, item = interaction[self.USER_ID], interaction[self.ITEM_ID]
        u_views, i_views = self.views()
        users = F.normalize(self.user_fusion(u_views[user]), dim=1)
        items = F.normalize(self.item_fusion(i_views[item]), dim=1)
        return in_batch_infonce(users, items, self.temp), i_views[item]

    def fac_loss(self, item_views):
        """Fine-to-coarse alignment of the ID view with each modality view, in the dataset's modality order."""
        d = self.embedding_size
        x, loss = item_views[:, :d], 0.0
        for k, m in enumerate(self.modalities):
            x = self.anchor_projections[k](x)
            y = self.modality_projections[m](item_views[:, (k + 1) * d:(k + 2) * d])
            loss = loss + in_batch_infonce(x, y, self.ssl_temp)
        return loss

    def rec_loss(self, interaction):
        return self._main_loss(interaction)[0]

    def calculate_loss(self, interaction):
        loss, item_views = self._main_loss(interaction)
        return loss + self.ssl_alpha * self.fac_loss(item_views)
