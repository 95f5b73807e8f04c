r"""
BM3
################################################
Reference:
    Xin Zhou, Hongyu Zhou, Yong Liu, Zhiwei Zeng, Chunyan Miao, Pengwei Wang, Yuan You and Feijun Jiang.
    "Bootstrap Latent Representations for Multi-modal Recommendation." in WWW 2023.

Self-supervised, without negative samples (section 3):

* Encoders (eq. 1-3): users and items by LightGCN over the user-item graph (``n_layers``, mean of the
  layers, item ID embedding added as a residual, as the authors' code does); each modality m by a
  linear projection of its features to the embedding size (the features are trainable embeddings
  initialised from the files, as in the authors' code).
* Latent embeddings (eq. 4-5): the online view is a shared predictor f_p (one linear layer) of an
  embedding; the target view is the embedding itself, stop-gradient, with dropout ``dropout`` (the
  paper's contrastive view generator).
* Loss (eq. 6-9): L_rec = (1 - cos(f_p(u), i~)) + (1 - cos(f_p(i), u~)) over the batch's interactions;
  L_align = sum_m (1 - cos(f_p(m_i), i~)) (inter-modality, with the item's ID view) + (1 - cos(f_p(m_i),
  m_i~)) (intra-modality), weighted by ``cl_weight``; plus ``reg_weight`` times MMRec's ``EmbLoss`` of
  the encoders' full user and item outputs (un-squared Frobenius norms divided by the number of items,
  RecBole's ``EmbLoss(require_pow=False)``), as the authors' code regularises.
* Score: f_p(u) . f_p(i).

Every modality of the dataset is used (``modalities`` selects). Training batches are interactions
without negatives (``train_neg_sample_args: ~``).
"""
import torch
import torch.nn.functional as F
from torch import nn

from recbole.model.abstract_recommender import GeneralRecommender
from recbole.model.loss import EmbLoss
from recbole.utils import InputType

from recbole_robust.model.cache import FullSortCache, PropagatedScores
from recbole_robust.model.layers import LightGCNEncoder


class BM3(PropagatedScores, GeneralRecommender):
    r"""Bootstrapped multi-modal model: LightGCN encoder, shared predictor, cosine losses without negatives."""

    input_type = InputType.POINTWISE
    needs_item_features = True

    def __init__(self, config, dataset):
        super().__init__(config, dataset)

        # load parameters info
        self.embedding_size = config["embedding_size"]
        self.reg_weight = config["reg_weight"]
        self.cl_weight = config["cl_weight"]
        self.dropout = config["dropout"]
        self.modalities = config["modalities"] or dataset.item_features.modalities

        # define layers and loss
        self.encoder = LightGCNEncoder(dataset, config["n_layers"], torch.device(config["device"]))
        self.user_embedding = nn.Embedding(self.n_users, self.embedding_size)
        self.item_id_embedding = nn.Embedding(self.n_items, self.embedding_size)
        nn.init.xavier_uniform_(self.user_embedding.weight)
        nn.init.xavier_uniform_(self.item_id_embedding.weight)
        self.predictor = nn.Linear(self.embedding_size, self.embedding_size)
        nn.init.xavier_normal_(self.predictor.weight)
        self.modality_embeddings = nn.ModuleDict({
            m: nn.Embedding.from_pretrained(dataset.item_features[m].clone(), freeze=False) for m in self.modalities
        })
        self.modality_projections = nn.ModuleDict({
            m: nn.Linear(dataset.item_features[m].shape[1], self.embedding_size) for m in self.modalities
        })
        for projection in self.modality_projections.values():
            nn.init.xavier_normal_(projection.weight)
        self.reg_loss_fct = EmbLoss()
        self._full_sort_cache = FullSortCache()
        self.perturbation_targets = {
            "user_embedding.weight": "row", "item_id_embedding.weight": "row",
            **{f"modality_embeddings.{m}.weight": "row" for m in self.modalities},
        }

    def modality_location(self, modality):
        return f"modality_embeddings.{modality}.weight", slice(None)

    def forward(self):
        """Encoder outputs (users [n_users, d], items [n_items, d])."""
        users, items = self.encoder(self.user_embedding.weight, self.item_id_embedding.weight)
        return users, items + self.item_id_embedding.weight

    def _target(self, x):
        with torch.no_grad():
            return F.dropout(x, self.dropout, training=self.training)

    @staticmethod
    def _distance(online, target):
        return 1 - F.cosine_similarity(online, target, dim=-1).mean()

    def _losses(self, interaction):
        users, items = interaction[self.USER_ID], interaction[self.ITEM_ID]
        u_all, i_all = self.forward()
        u_target, i_target = self._target(u_all[users]), self._target(i_all[items])
        loss = self._distance(self.predictor(u_all[users]), i_target) \
            + self._distance(self.predictor(i_all[items]), u_target)
        for m in self.modalities:
            features = self.modality_projections[m](self.modality_embeddings[m](items))
            align = self._distance(self.predictor(features), i_target) \
                + self._distance(self.predictor(features), self._target(features))
            loss = loss + self.cl_weight * align
        return loss, (u_all, i_all)

    def rec_loss(self, interaction):
        return self._losses(interaction)[0]

    def calculate_loss(self, interaction):
        loss, (u_all, i_all) = self._losses(interaction)
        if self.reg_weight:
            loss = loss + self.reg_weight * self.reg_loss_fct(u_all, i_all, require_pow=False).squeeze()
        return loss

    def propagate(self):
        users, items = self.forward()
        return self.predictor(users), self.predictor(items)
