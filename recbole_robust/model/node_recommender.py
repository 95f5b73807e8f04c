"""Base of the GNN recommenders whose ``forward()`` returns one representation per graph node.

Row ``u`` is user ``u`` and row ``n_users + i`` is item ``i`` (MMGCN, GRCN); the score is the dot
product of the two rows, trained with BPR. Full-sort evaluation reuses ``forward()`` across batches.
"""
from recbole.model.abstract_recommender import GeneralRecommender
from recbole.model.loss import BPRLoss
from recbole.utils import InputType

from recbole_robust.model.cache import FullSortCache


class GraphNodeRecommender(GeneralRecommender):
    input_type = InputType.PAIRWISE
    needs_item_features = True

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        self.bpr_loss_fct = BPRLoss()
        self._full_sort_cache = FullSortCache()

    def forward(self):
        """[n_users + n_items, d] node representations."""
        raise NotImplementedError

    def id_regulariser(self, interaction):
        """Mean squared ID embedding (``self.id_embedding``) of the batch's users and items."""
        user, pos, neg = interaction[self.USER_ID], interaction[self.ITEM_ID], interaction[self.NEG_ITEM_ID]
        return sum((self.id_embedding[rows] ** 2).mean() for rows in (user, pos + self.n_users, neg + self.n_users))

    def rec_loss(self, interaction):
        user, pos, neg = interaction[self.USER_ID], interaction[self.ITEM_ID], interaction[self.NEG_ITEM_ID]
        x = self.forward()
        u = x[user]
        return self.bpr_loss_fct((u * x[pos + self.n_users]).sum(-1), (u * x[neg + self.n_users]).sum(-1))

    def predict(self, interaction):
        x = self.forward()
        return (x[interaction[self.USER_ID]] * x[interaction[self.ITEM_ID] + self.n_users]).sum(-1)

    def full_sort_predict(self, interaction):
        x = self._full_sort_cache.get(self, self.forward)
        return (x[interaction[self.USER_ID]] @ x[self.n_users:].T).view(-1)
