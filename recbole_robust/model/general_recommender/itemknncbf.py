r"""
ItemKNNCBF
################################################
Reference:
    Maurizio Ferrari Dacrema, Paolo Cremonesi and Dietmar Jannach. "Are We Really Making Much Progress? A Worrying
    Analysis of Recent Neural Recommendation Approaches." in RecSys 2019 (the content-based kNN baseline), as MMRec
    (enoche/MMRec ``src/models/itemknncbf.py``) runs it on multimodal data.

Items are similar by their content: ``s_ij = f_i . f_j / (|f_i| |f_j| + shrink)`` with ``f_i`` the item's features
of every modality concatenated (MMRec: image then text; here the dataset's modalities, or ``modalities``), each
item keeping its ``knn_k`` most similar items (itself included). A user's score for item j is
``sum_{i in the user's training items} s_ij``, i.e. ``R S`` with ``R`` the training interactions.

Choices where MMRec's code differs:

* the similarity graph is built in row blocks and kept sparse (``data.graphs.shrunk_knn``): memory O(n_items k),
  where MMRec builds a dense n_items x n_items matrix (its users report running out of memory), and the scores are
  computed per batch of users, where MMRec keeps the dense n_users x n_items product;
* the model has no parameters to learn (MMRec: ``req_training: False``, one epoch); it is trained by RecBole's loop
  like any model (one epoch of a zero loss on a placeholder parameter), so every option of the loop is accepted,
  and Mirror Gradient, SAM or an adversary have nothing to change.

Defaults are MMRec's ``configs/model/ItemKNNCBF.yaml`` (``knn_k`` 10, ``shrink`` 10).
"""
import numpy as np
import torch
from recbole.model.abstract_recommender import GeneralRecommender
from recbole.utils import InputType
from torch import nn

from recbole_robust.data.graphs import shrunk_knn
from recbole_robust.errors import RecBoleRobustError


class ItemKNNCBF(GeneralRecommender):
    r"""Content-based item kNN: scores ``R S`` with ``S`` the shrunk cosine kNN graph of the items' features."""

    input_type = InputType.POINTWISE
    needs_item_features = True

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        self.knn_k, self.shrink = config["knn_k"], config["shrink"]
        if not isinstance(self.knn_k, int) or self.knn_k < 1:
            raise RecBoleRobustError(f"knn_k must be an integer >= 1, got {self.knn_k!r}")
        if not isinstance(self.shrink, (int, float)) or self.shrink < 0:
            raise RecBoleRobustError(f"shrink must be a number >= 0, got {self.shrink!r}")
        self.modalities = config["modalities"] or dataset.item_features.modalities
        features = dataset.item_features.concat(self.modalities).float()
        self.similarity = shrunk_knn(features, self.knn_k, float(self.shrink))  # scipy CSR [n_items, n_items]
        self.interactions = dataset.inter_matrix(form="csr").astype(np.float32)  # the training split's
        self.placeholder = nn.Parameter(torch.zeros(1))  # RecBole's loop needs a parameter to optimise

    def calculate_loss(self, interaction):
        return (self.placeholder * 0).sum()

    def _user_scores(self, users):
        rows = self.interactions[users.cpu().numpy()] @ self.similarity
        return torch.from_numpy(rows.toarray()).to(self.placeholder.device)

    def predict(self, interaction):
        users, items = interaction[self.USER_ID], interaction[self.ITEM_ID]
        unique, inverse = torch.unique(users, return_inverse=True)
        return self._user_scores(unique)[inverse, items]

    def full_sort_predict(self, interaction):
        return self._user_scores(interaction[self.USER_ID]).view(-1)
