r"""
APR
################################################
Reference:
    Xiangnan He, Zhankui He, Xiaoyu Du and Tat-Seng Chua. "Adversarial Personalized Ranking for
    Recommendation." in SIGIR 2018.

AMF: matrix factorisation y_ui = p_u^T q_i trained with APR,

    L_APR = L_BPR(Theta) + lambda * L_BPR(Theta + Delta_adv) + beta ||Theta||^2,
    Delta_adv = eps * Gamma / ||Gamma||,  Gamma = dL_BPR(Theta + Delta) / dDelta

with Delta on the user and item embedding tables together (one adversarial term,
``adv_targets: [[user_embedding.weight, item_embedding.weight]]``), normalised per embedding row as
the authors' code does (l2_normalize over the embedding dimension). The perturbation comes from the
Trainer's perturbation engine. As in the paper, MF-BPR is trained first (``adv_start_epoch``, or
``--pretrained`` from an APR checkpoint trained without the adversary); defaults follow the
authors' released settings: eps = 0.5, lambda = 1, embedding size 64, Adagrad, batches of 512.
"""
import torch
from torch import nn

from recbole.model.abstract_recommender import GeneralRecommender
from recbole.model.init import xavier_normal_initialization
from recbole.model.loss import BPRLoss, EmbLoss
from recbole.utils import InputType


class APR(GeneralRecommender):
    r"""AMF: BPR matrix factorisation with adversarial perturbations of the embeddings."""

    input_type = InputType.PAIRWISE
    perturbation_targets = {"user_embedding.weight": "row", "item_embedding.weight": "row"}

    def __init__(self, config, dataset):
        super().__init__(config, dataset)

        # load parameters info
        self.embedding_size = config["embedding_size"]
        self.reg_weight = config["reg_weight"]

        # define layers and loss
        self.user_embedding = nn.Embedding(self.n_users, self.embedding_size)  # p_u
        self.item_embedding = nn.Embedding(self.n_items, self.embedding_size)  # q_i
        self.bpr_loss_fct = BPRLoss()
        self.reg_loss_fct = EmbLoss()

        # parameters initialization
        self.apply(xavier_normal_initialization)

    def score(self, user, item):
        return (self.user_embedding(user) * self.item_embedding(item)).sum(-1)

    def rec_loss(self, interaction):
        """BPR loss of the batch, without the regulariser (the term an adversary perturbs)."""
        user, pos_item, neg_item = interaction[self.USER_ID], interaction[self.ITEM_ID], interaction[self.NEG_ITEM_ID]
        return self.bpr_loss_fct(self.score(user, pos_item), self.score(user, neg_item))

    def calculate_loss(self, interaction):
        user, pos_item, neg_item = interaction[self.USER_ID], interaction[self.ITEM_ID], interaction[self.NEG_ITEM_ID]
        reg = self.reg_loss_fct(
            self.user_embedding(user), self.item_embedding(pos_item), self.item_embedding(neg_item), require_pow=True
        )
        return self.rec_loss(interaction) + self.reg_weight * reg.squeeze()

    def predict(self, interaction):
        return self.score(interaction[self.USER_ID], interaction[self.ITEM_ID])

    def full_sort_predict(self, interaction):
        user_e = self.user_embedding(interaction[self.USER_ID])
        return torch.matmul(user_e, self.item_embedding.weight.T).view(-1)
