r"""
CAE
################################################
Reference:
    Feng Yuan, Lina Yao and Boualem Benatallah. "Adversarial Collaborative Auto-encoder for Top-N
    Recommendation." in IJCNN 2019 (arXiv:1808.05361), eq. (1) and (8).

The collaborative auto-encoder: CDAE without input corruption,

    y_hat_u = f(W2 h(W1 y_u + p_u + b1) + b2),   h = sigmoid, f = identity

trained with the cross-entropy loss_CE = -y log sigma(y_hat) - (1 - y) log(1 - sigma(y_hat)), summed
over every item of each user in the mini-batch (eq. 8), plus gamma (||W1||^2 + ||W2||^2 + ||b1||^2 +
||b2||^2 + ||P||^2). The activations are configurable (``hidden_activation``,
``output_activation``: the paper's identity / sigmoid ablation of section 4.2.3). RecBole's CDAE
stays the corrupted baseline.

A mini-batch is the distinct users of a batch of RecBole's training interactions (RecBole's loaders
iterate interactions; the paper draws users), each with its full training vector y_u.
"""
import torch
from torch import nn

from recbole.model.abstract_recommender import AutoEncoderMixin, GeneralRecommender
from recbole.model.init import xavier_normal_initialization
from recbole.utils import InputType

from recbole_robust.errors import RecBoleRobustError
from recbole_robust.model.cache import distinct_user_scores

ACTIVATIONS = {"sigmoid": torch.sigmoid, "identity": lambda x: x, "relu": torch.relu, "tanh": torch.tanh}


class CAE(GeneralRecommender, AutoEncoderMixin):
    r"""Collaborative auto-encoder: one hidden layer over the user's item vector plus a user vector."""

    input_type = InputType.POINTWISE
    perturbation_targets = {"encoder.weight": "tensor", "decoder.weight": "tensor", "user_embedding.weight": "row"}

    def __init__(self, config, dataset):
        super().__init__(config, dataset)

        # load parameters info
        self.hidden_size = config["hidden_size"]
        self.reg_weight = config["reg_weight"]
        for key in ("hidden_activation", "output_activation"):
            if config[key] not in ACTIVATIONS:
                raise RecBoleRobustError(f"{key} must be one of {', '.join(ACTIVATIONS)}, not {config[key]!r}")
        self.hidden_activation = ACTIVATIONS[config["hidden_activation"]]
        self.output_activation = ACTIVATIONS[config["output_activation"]]
        self.build_histroy_items(dataset)

        # define layers and loss
        self.user_embedding = nn.Embedding(self.n_users, self.hidden_size)  # p_u
        self.encoder = nn.Linear(self.n_items, self.hidden_size)  # W1, b1
        self.decoder = nn.Linear(self.hidden_size, self.n_items)  # W2, b2
        self.loss_fct = nn.BCEWithLogitsLoss(reduction="sum")

        # parameters initialization
        self.apply(xavier_normal_initialization)

    def forward(self, user, y_u):
        """y_hat_u [B, n_items] of users ``user`` [B] with item vectors ``y_u`` [B, n_items]."""
        hidden = self.hidden_activation(self.encoder(y_u) + self.user_embedding(user))
        return self.output_activation(self.decoder(hidden))

    def rec_loss(self, interaction):
        """Cross-entropy of the batch's users (eq. 8), without the regulariser."""
        user = torch.unique(interaction[self.USER_ID])
        y_u = self.get_rating_matrix(user)
        return self.loss_fct(self.forward(user, y_u), y_u)

    def reg_loss(self):
        params = (self.encoder.weight, self.encoder.bias, self.decoder.weight, self.decoder.bias,
                  self.user_embedding.weight)
        return self.reg_weight * sum(p.pow(2).sum() for p in params)

    def calculate_loss(self, interaction):
        return self.rec_loss(interaction) + self.reg_loss()

    def predict(self, interaction):
        return distinct_user_scores(interaction[self.USER_ID], interaction[self.ITEM_ID],
                                    lambda users: self.forward(users, self.get_rating_matrix(users)))

    def full_sort_predict(self, interaction):
        user = interaction[self.USER_ID]
        return self.forward(user, self.get_rating_matrix(user)).view(-1)
