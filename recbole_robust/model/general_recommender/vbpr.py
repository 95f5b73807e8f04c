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

Options used by AMR (its eq. 4 is this predictor with one user vector and no biases):
``single_user_vector`` (theta_u = gamma_u, so ``content_embedding_size`` must equal
``embedding_size``) and ``item_bias`` (beta_i and beta'). ``cold_items: content`` follows AMR
section 4.1.2: items without a training interaction get a zero ID vector and bias, so they are
scored by their content alone, and are never used as training negatives (a sampled cold negative is
replaced by a random warm item).

Options used by the MG preset (the MG authors' MMRec VBPR, ``properties/presets/mg/VBPR.yaml``):
``reg_form: mmrec`` is MMRec's ``EmbLoss``: ``reg_weight`` times the sum of the (un-squared) L2 norms
of the batch's user vectors [gamma_u; theta_u] and positive and negative item vectors
[gamma_i; E f_i], divided by the batch size, with no separate term on E; ``content_projection_bias``
gives E f_i a bias, as MMRec's ``item_linear`` has.
"""
import torch
from torch import nn

from recbole.model.abstract_recommender import GeneralRecommender
from recbole.model.init import xavier_normal_initialization
from recbole.model.loss import BPRLoss, EmbLoss
from recbole.utils import InputType

from recbole_robust.errors import RecBoleRobustError
from recbole_robust.model.cache import FullSortCache


class VBPR(GeneralRecommender):
    r"""VBPR: BPR matrix factorisation plus a content factor ``theta_u^T E f_i`` per item."""

    input_type = InputType.PAIRWISE
    needs_item_features = True

    def __init__(self, config, dataset):
        super().__init__(config, dataset)

        # load parameters info
        self.embedding_size = config["embedding_size"]
        self.content_embedding_size = config["content_embedding_size"]
        self.reg_weight = config["reg_weight"]
        self.reg_weight_e = config["reg_weight_e"]
        self.modalities = config["modalities"] or dataset.item_features.modalities
        self.single_user_vector = config["single_user_vector"]
        self.use_item_bias = config["item_bias"]
        if config["cold_items"] not in ("content", "id"):
            raise RecBoleRobustError(f"cold_items must be 'content' or 'id', not {config['cold_items']!r}")
        self.content_only_cold_items = config["cold_items"] == "content"
        self.reg_form = config["reg_form"]
        if self.reg_form not in ("l2", "mmrec"):
            raise RecBoleRobustError(f"reg_form must be 'l2' or 'mmrec', not {self.reg_form!r}")
        if self.single_user_vector and self.content_embedding_size != self.embedding_size:
            raise RecBoleRobustError(
                "single_user_vector needs content_embedding_size == embedding_size "
                f"({self.content_embedding_size} != {self.embedding_size})"
            )

        # define layers and loss
        features = dataset.item_features.concat(self.modalities)
        dims = dataset.item_features.dims()
        offsets = [0]
        for m in self.modalities:
            offsets.append(offsets[-1] + dims[m])
        self._modality_columns = {m: slice(a, b) for m, a, b in zip(self.modalities, offsets, offsets[1:])}
        self.register_buffer("item_features", features, persistent=False)  # [n_items, F]
        warm = torch.zeros(self.n_items, dtype=torch.bool)
        warm[dataset.inter_feat[self.ITEM_ID]] = True
        self.register_buffer("warm_items", warm, persistent=False)  # items with a training interaction
        self.register_buffer("warm_ids", warm.nonzero().squeeze(1), persistent=False)
        self.user_embedding = nn.Embedding(self.n_users, self.embedding_size)  # gamma_u
        self.item_embedding = nn.Embedding(self.n_items, self.embedding_size)  # gamma_i
        if not self.single_user_vector:
            self.user_content_embedding = nn.Embedding(self.n_users, self.content_embedding_size)  # theta_u
        self.content_projection = nn.Linear(features.shape[1], self.content_embedding_size,
                                            bias=bool(config["content_projection_bias"]))  # E
        if self.use_item_bias:
            self.item_bias = nn.Embedding(self.n_items, 1)  # beta_i
            self.content_bias = nn.Linear(features.shape[1], 1, bias=False)  # beta'
        self.bpr_loss_fct = BPRLoss()
        self.reg_loss_fct = EmbLoss()
        self._full_sort_cache = FullSortCache()
        self.perturbation_targets = {
            "item_features": "row", "user_embedding.weight": "row", "item_embedding.weight": "row",
            "content_projection.weight": "tensor",
        }
        if not self.single_user_vector:
            self.perturbation_targets["user_content_embedding.weight"] = "row"

        # parameters initialization
        self.apply(xavier_normal_initialization)
        if self.use_item_bias:
            nn.init.zeros_(self.item_bias.weight)
            nn.init.zeros_(self.content_bias.weight)

    def modality_location(self, modality):
        """(tensor name, column slice) of a modality's part of the concatenated features."""
        return "item_features", self._modality_columns[modality]

    def user_vectors(self, user):
        """gamma_u and theta_u of ``user`` (the same tensor with ``single_user_vector``)."""
        gamma_u = self.user_embedding(user)
        return gamma_u, gamma_u if self.single_user_vector else self.user_content_embedding(user)

    def item_representation(self, items=None):
        """Item ID vector, content vector ``E f_i`` and bias ``beta_i + beta'^T f_i`` of ``items`` (all if None)."""
        if items is None:
            feats, id_emb = self.item_features, self.item_embedding.weight
            warm = self.warm_items
        else:
            feats, id_emb, warm = self.item_features[items], self.item_embedding(items), self.warm_items[items]
        bias = torch.zeros(feats.shape[0], device=feats.device)
        if self.use_item_bias:
            item_bias = self.item_bias.weight.squeeze(-1) if items is None else self.item_bias(items).squeeze(-1)
            bias = item_bias + self.content_bias(feats).squeeze(-1)
        if self.content_only_cold_items:
            id_emb = id_emb * warm.unsqueeze(-1)
            if self.use_item_bias:
                bias = bias - item_bias * ~warm
        return id_emb, self.content_projection(feats), bias

    @staticmethod
    def _score(user_vectors, item_vectors):
        (gamma_u, theta_u), (gamma_i, content_i, bias_i) = user_vectors, item_vectors
        return (gamma_u * gamma_i).sum(-1) + (theta_u * content_i).sum(-1) + bias_i

    def score(self, user, item):
        """x_ui for paired ``user`` [B] and ``item`` [B] -> [B]."""
        return self._score(self.user_vectors(user), self.item_representation(item))

    def _negatives(self, interaction):
        """The batch's negatives; cold ones are replaced once, in the batch, by random warm items."""
        neg_item = interaction[self.NEG_ITEM_ID]
        if self.content_only_cold_items:
            # a random warm item is drawn for every negative and kept where the negative is cold: no host sync
            pick = torch.randint(len(self.warm_ids), neg_item.shape, device=neg_item.device)
            neg_item = torch.where(self.warm_items[neg_item], neg_item, self.warm_ids[pick])
            interaction[self.NEG_ITEM_ID] = neg_item  # later passes on this batch see the same ones
        return neg_item

    def _batch_vectors(self, interaction):
        """User vectors and positive / negative item representations of a batch, computed once."""
        user, pos_item = interaction[self.USER_ID], interaction[self.ITEM_ID]
        neg_item = self._negatives(interaction)
        return user, pos_item, neg_item, self.user_vectors(user), self.item_representation(pos_item), \
            self.item_representation(neg_item)

    def _rec_loss(self, vectors):
        _, _, _, users, pos, neg = vectors
        return self.bpr_loss_fct(self._score(users, pos), self._score(users, neg))

    def _reg_loss(self, vectors):
        user, pos_item, neg_item, users, pos, neg = vectors
        if self.reg_form == "mmrec":
            batch = [torch.cat(users, -1), torch.cat(pos[:2], -1), torch.cat(neg[:2], -1)]
            return self.reg_weight * self.reg_loss_fct(*batch, require_pow=False).squeeze()
        batch = [self.user_embedding(user), self.item_embedding(pos_item), self.item_embedding(neg_item)]
        projection_terms = self.content_projection.weight.pow(2).sum()
        if not self.single_user_vector:
            batch.append(self.user_content_embedding(user))
        if self.use_item_bias:
            batch += [self.item_bias(pos_item), self.item_bias(neg_item)]
            projection_terms = projection_terms + self.content_bias.weight.pow(2).sum()
        batch_terms = self.reg_loss_fct(*batch, require_pow=True)
        return self.reg_weight * batch_terms.squeeze() + self.reg_weight_e * projection_terms / 2

    def rec_loss(self, interaction):
        """BPR loss of the batch, without regularisers (the term an adversary perturbs)."""
        return self._rec_loss(self._batch_vectors(interaction))

    def reg_loss(self, interaction):
        return self._reg_loss(self._batch_vectors(interaction))

    def calculate_loss(self, interaction):
        vectors = self._batch_vectors(interaction)
        return self._rec_loss(vectors) + self._reg_loss(vectors)

    def predict(self, interaction):
        # every item's representation once per evaluation (sampled-negative protocols score ~1000 items per
        # user: projecting each pair's features again would cost 1000 projections per user)
        item = interaction[self.ITEM_ID]
        gamma_i, content_i, bias_i = self._full_sort_cache.get(self, self.item_representation)
        return self._score(self.user_vectors(interaction[self.USER_ID]), (gamma_i[item], content_i[item], bias_i[item]))

    def full_sort_predict(self, interaction):
        user = interaction[self.USER_ID]
        gamma_u, theta_u = self.user_vectors(user)
        gamma_i, content_i, bias_i = self._full_sort_cache.get(self, self.item_representation)
        return (gamma_u @ gamma_i.T + theta_u @ content_i.T + bias_i).view(-1)
