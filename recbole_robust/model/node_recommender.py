"""Base of the GNN recommenders whose ``forward()`` returns one representation per graph node.

Row ``u`` is user ``u`` and row ``n_users + i`` is item ``i`` (MMGCN, GRCN); the score is the dot
product of the two rows, trained with BPR. The base holds what both share: the ID embedding of every
node (``embedding_size``), one feature buffer per modality (``features_<modality>``, every modality
of the dataset unless ``modalities`` selects), ``reg_weight``, and the perturbable tensors.
Full-sort evaluation reuses ``forward()`` across batches.
"""
import torch
from torch import nn

from recbole.model.abstract_recommender import GeneralRecommender
from recbole.model.loss import BPRLoss
from recbole.utils import InputType

from recbole_robust.model.cache import FullSortCache


class GraphNodeRecommender(GeneralRecommender):
    input_type = InputType.PAIRWISE
    needs_item_features = True

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        self.embedding_size = config["embedding_size"]
        self.reg_weight = config["reg_weight"]
        self.modalities = config["modalities"] or dataset.item_features.modalities
        for m in self.modalities:
            self.register_buffer(f"features_{m}", dataset.item_features[m], persistent=False)  # [n_items, F_m]
        n_nodes = self.n_users + self.n_items
        self.id_embedding = nn.Parameter(nn.init.xavier_normal_(torch.empty(n_nodes, self.embedding_size)))
        self.perturbation_targets = {"id_embedding": "row", **{f"features_{m}": "row" for m in self.modalities}}
        self.bpr_loss_fct = BPRLoss()
        self._full_sort_cache = FullSortCache()

    def modality_location(self, modality):
        """(tensor name, column slice) of a modality's item features, for information adjustment."""
        return f"features_{modality}", slice(None)

    def forward(self):
        """[n_users + n_items, d] node representations."""
        raise NotImplementedError

    def id_regulariser(self, interaction):
        """Mean squared ID embedding (``self.id_embedding``) of the batch's users and items."""
        user, pos, neg = interaction[self.USER_ID], interaction[self.ITEM_ID], interaction[self.NEG_ITEM_ID]
        return sum((self.id_embedding[rows] ** 2).mean() for rows in (user, pos + self.n_users, neg + self.n_users))

    def rec_loss(self, interaction):
        user, pos, neg = interaction[self.USER_ID], interaction[self.ITEM_ID], interaction[self.NEG_ITEM_ID]
        # one gather for the batch's three row sets: one scatter into the node gradient in the backward pass
        u, p, n = self.forward()[torch.cat([user, pos + self.n_users, neg + self.n_users])].split(len(user))
        return self.bpr_loss_fct((u * p).sum(-1), (u * n).sum(-1))

    def predict(self, interaction):
        x = self._full_sort_cache.get(self, self.forward)
        return (x[interaction[self.USER_ID]] * x[interaction[self.ITEM_ID] + self.n_users]).sum(-1)

    def full_sort_predict(self, interaction):
        x = self._full_sort_cache.get(self, self.forward)
        return (x[interaction[self.USER_ID]] @ x[self.n_users:].T).view(-1)
