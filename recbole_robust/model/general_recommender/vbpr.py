r"""
VBPR
################################################
Reference:
    Ruining He and Julian McAuley. "VBPR: Visual Bayesian Personalized Ranking from Implicit
    Feedback." in AAAI 2016.

The predictor is eq. (2) of the paper without the terms that cancel in the pairwise loss
(the global offset alpha and the user bias beta_u):

    x_ui = beta_i + gamma_u^T gamma_i + theta_u^T (E f_i) + beta'^T f_i

f_i is the item's content feature vector: every modality the dataset has, concatenated (the paper's
CNN image feature is the one-modality case), or the modalities listed in ``modalities``. Training
minimises the BPR loss with L2 regularisation: ``reg_weight`` (lambda_Theta) on the user and item
vectors and item biases of the batch, ``reg_weight_e`` (lambda_E) on E and beta'.
"""
import torch
from torch import nn

from recbole.model.abstract_recommender import GeneralRecommender
from recbole.model.init import xavier_normal_initialization
from recbole.model.loss import BPRLoss, EmbLoss
from recbole.utils import InputType


class VBPR(GeneralRecommender):
    r"""VBPR: BPR matrix factorisation plus a visual (content) factor ``theta_u^T E f_i`` per item."""

    input_type = InputType.PAIRWISE
    needs_item_features = True

    def __init__(self, config, dataset):
        super().__init__(config, dataset)

        # load parameters info
        self.embedding_size = config["embedding_size"]
        self.content_embedding_size = config["content_embedding_size"]
        self.reg_weight = config["reg_weight"]
        self.reg_weight_e = config["reg_weight_e"]
        self.modalities = config["modalities"]

        # define layers and loss
        features = dataset.item_features.concat(self.modalities)
        self.register_buffer("item_features", features, persistent=False)  # [n_items, F]
        self.user_embedding = nn.Embedding(self.n_users, self.embedding_size)  # gamma_u
        self.item_embedding = nn.Embedding(self.n_items, self.embedding_size)  # gamma_i
        self.user_content_embedding = nn.Embedding(self.n_users, self.content_embedding_size)  # theta_u
        self.item_bias = nn.Embedding(self.n_items, 1)  # beta_i
        self.content_projection = nn.Linear(features.shape[1], self.content_embedding_size, bias=False)  # E
        self.content_bias = nn.Linear(features.shape[1], 1, bias=False)  # beta'
        self.bpr_loss_fct = BPRLoss()
        self.reg_loss_fct = EmbLoss()
        self._all_items = None  # (tensors it was computed from, their versions, representation)

        # parameters initialization
        self.apply(xavier_normal_initialization)
        nn.init.zeros_(self.item_bias.weight)
        nn.init.zeros_(self.content_bias.weight)

    def item_representation(self, items=None):
        """Item ID vector, content vector ``E f_i`` and bias ``beta_i + beta'^T f_i`` of ``items`` (all if None)."""
        if items is None:
            feats, id_emb, bias = self.item_features, self.item_embedding.weight, self.item_bias.weight
        else:
            feats, id_emb, bias = self.item_features[items], self.item_embedding(items), self.item_bias(items)
        return id_emb, self.content_projection(feats), (bias + self.content_bias(feats)).squeeze(-1)

    def all_items_representation(self):
        """``item_representation()`` of every item, reused across the batches of a full-sort evaluation.

        RecBole evaluates full ranking a few users per batch; recomputing ``E f_i`` for all items in
        each batch made VBPR's evaluation several times slower than BPR's. The result is reused
        while gradients are off and every tensor it depends on is the same object at the same
        version (an optimiser step or an injected perturbation gives a new version or object).
        """
        if torch.is_grad_enabled():
            return self.item_representation()
        sources = (self.item_features, self.item_embedding.weight, self.item_bias.weight,
                   self.content_projection.weight, self.content_bias.weight)
        versions = [t._version for t in sources]
        cached = self._all_items
        if cached is None or any(a is not b for a, b in zip(cached[0], sources)) or cached[1] != versions:
            self._all_items = cached = (sources, versions, self.item_representation())
        return cached[2]

    def score(self, user, item):
        """x_ui for paired ``user`` [B] and ``item`` [B] -> [B]."""
        gamma_i, content_i, bias_i = self.item_representation(item)
        return (
            (self.user_embedding(user) * gamma_i).sum(-1)
            + (self.user_content_embedding(user) * content_i).sum(-1)
            + bias_i
        )

    def bpr_loss(self, interaction):
        user = interaction[self.USER_ID]
        pos_item, neg_item = interaction[self.ITEM_ID], interaction[self.NEG_ITEM_ID]
        return self.bpr_loss_fct(self.score(user, pos_item), self.score(user, neg_item))

    def reg_loss(self, interaction):
        user = interaction[self.USER_ID]
        pos_item, neg_item = interaction[self.ITEM_ID], interaction[self.NEG_ITEM_ID]
        batch_terms = self.reg_loss_fct(
            self.user_embedding(user), self.user_content_embedding(user),
            self.item_embedding(pos_item), self.item_embedding(neg_item),
            self.item_bias(pos_item), self.item_bias(neg_item), require_pow=True,
        )
        projection_terms = self.content_projection.weight.pow(2).sum() + self.content_bias.weight.pow(2).sum()
        return self.reg_weight * batch_terms.squeeze() + self.reg_weight_e * projection_terms / 2

    def calculate_loss(self, interaction):
        return self.bpr_loss(interaction) + self.reg_loss(interaction)

    def predict(self, interaction):
        return self.score(interaction[self.USER_ID], interaction[self.ITEM_ID])

    def full_sort_predict(self, interaction):
        user = interaction[self.USER_ID]
        gamma_i, content_i, bias_i = self.all_items_representation()
        scores = self.user_embedding(user) @ gamma_i.T + self.user_content_embedding(user) @ content_i.T
        return (scores + bias_i).view(-1)
