r"""
DAMRS
################################################
Reference:
    Guipeng Xv, Xinyu Li, Ruobing Xie, Chen Lin, Chong Liu, Feng Xia, Zhanhui Kang and Leyu Lin. "Improving
    Multi-modal Recommender Systems by Denoising and Aligning Multi-modal Content and User Feedback." in KDD 2024
    (DA-MRS). Defaults: MMRec's ``configs/model/DAMRS.yaml`` (first value of each grid), the rest as its port
    (``src/models/damrs.py``) computes it.

Representations: LightGCN over the training graph (``n_ui_layers``, mean of the layers) for users and items, and one
item view per item-item graph, the item ID embeddings propagated ``n_mm_layers`` times over it:

* one graph per modality, denoised across modalities (``graphs.agreeing_knn_graphs``): an item's ``knn_k`` nearest
  items by cosine similarity among those at least as similar as the mean pair in *every* modality;
* the behaviour graph (``graphs.item_behaviour_graph``): each item's ``behaviour_k`` items with the most users in
  common, weighted by the count, and itself.

Score: ``u . (i + mean of the item views)``. Loss (MMRec's port):

* denoised BPR: ``-mean(w+ log sigmoid(s_ui - s_uj) + w- log sigmoid(s_uj - s_ui))`` with weights computed without
  gradient from the agreement of the views: ``p_g = sigmoid(u . normalize(h_g(i)))`` for each view g; ``w+ =
  clamp(mean_g p_g exp(-var_g p_g)^2, 0, 1)`` (a positive the views agree on and like counts fully); ``w- =
  clamp(max_g p_g - mean(p_neg), 0, 1)`` where the views' mean ``p`` of the positive is below the batch's mean
  over negatives (a likely false positive is pushed the other way), else 0;
* ``neighbor_weight`` x neighbour discrimination, averaged over the views: for each item of the batch, the
  softmax of its cosine similarity to every item in each view gives pseudo-labels: the 10 items with the highest
  sum of the other views' probabilities plus twice this view's (shared neighbours), and the 10 next of this view
  alone; InfoNCE (temperature 0.2) of the item against all items, for each set;
* ``kl_weight`` x the symmetric Bernoulli KL between ``sigmoid(u . normalize(i))`` from the ID graph and from the
  mean item view, over the batch's distinct users x distinct items (aligning feedback and content).

Every modality of the dataset gives a view (MMRec's port reads two, image and text; ``modalities`` selects).

Where this port differs from MMRec's: the behaviour graph is built from the training split (see above); the KL is
computed as ``(p - q)(logit_p - logit_q)``, the same sum of the two KLs (MMRec's ``p log p`` is NaN where a sigmoid
saturates to 1); the unused feature
projections of MMRec's port are left out; the graphs are built in blocks (MMRec's builds two dense n_items^2
similarity matrices); each view's similarities of the batch's items to every item are computed once, in float32
(under mixed precision too), for the pseudo-labels and the discrimination's denominators (MMRec's computes them
twice).
"""
import torch
import torch.nn.functional as F
from recbole.model.abstract_recommender import GeneralRecommender
from recbole.utils import InputType
from torch import nn

from recbole_robust.data.graphs import agreeing_knn_graphs, csr_transpose, item_behaviour_graph
from recbole_robust.model.cache import FullSortCache, PropagatedScores
from recbole_robust.model.layers import LightGCNEncoder, exp_product_sums, graph_product

PSEUDO_LABELS = 10  # neighbours taken as positives per set (MMRec's port)
TEMPERATURE = 0.2


def symmetric_bernoulli_kl(logit_p, logit_q):
    """KL(p || q) + KL(q || p) of Bernoulli(p = sigmoid(logit_p)) and Bernoulli(q = sigmoid(logit_q)), element-wise:
    ``(p - q)(logit_p - logit_q)``, the sum of MMRec's two ``p log p - p log q + ...`` terms written exactly, without
    the logarithms that are NaN where a sigmoid saturates."""
    return (torch.sigmoid(logit_p) - torch.sigmoid(logit_q)) * (logit_p - logit_q)


class DAMRS(PropagatedScores, GeneralRecommender):
    r"""DA-MRS: denoised item-item views, feedback-weighted BPR, neighbour discrimination and KL alignment."""

    input_type = InputType.PAIRWISE
    needs_item_features = True

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        d = config["embedding_size"]
        self.n_mm_layers = config["n_mm_layers"]
        self.kl_weight, self.neighbor_weight = config["kl_weight"], config["neighbor_weight"]
        self.modalities = config["modalities"] or dataset.item_features.modalities
        device = torch.device(config["device"])
        self.encoder = LightGCNEncoder(dataset, config["n_ui_layers"], device)
        graphs = agreeing_knn_graphs({m: dataset.item_features[m].to(device) for m in self.modalities},
                                     config["knn_k"])
        users, items = (t.numpy() for t in dataset.interaction_edges())
        graphs["behaviour"] = item_behaviour_graph(users, items, self.n_users, self.n_items,
                                                   config["behaviour_k"]).to(device)
        self.views = list(graphs)
        for view, graph in graphs.items():
            self.register_buffer(f"graph_{view}", graph, persistent=False)
            self.register_buffer(f"graph_{view}_t", csr_transpose(graph), persistent=False)
        self.user_embedding = nn.Embedding(self.n_users, d)
        self.item_id_embedding = nn.Embedding(self.n_items, d)
        nn.init.xavier_uniform_(self.user_embedding.weight)
        nn.init.xavier_uniform_(self.item_id_embedding.weight)
        self._full_sort_cache = FullSortCache()
        self.perturbation_targets = {"user_embedding.weight": "row", "item_id_embedding.weight": "row"}

    def item_views(self):
        """``{view: [n_items, d]}``: the item ID embeddings propagated over each item-item graph."""
        views = {}
        for view in self.views:
            h = self.item_id_embedding.weight
            for _ in range(self.n_mm_layers):
                h = graph_product(getattr(self, f"graph_{view}"), h, getattr(self, f"graph_{view}_t"))
            views[view] = h
        return views

    def forward(self):
        users, items = self.encoder(self.user_embedding.weight, self.item_id_embedding.weight)
        return users, items, self.item_views()

    def propagate(self):
        users, items, views = self.forward()
        return users, items + torch.stack(list(views.values())).mean(0)

    @staticmethod
    @torch.no_grad()
    def feedback_weights(u, pos_views, neg_views):
        """``(w+, w-)`` of the batch's pairs from the views' agreement (module docstring)."""
        positive = torch.sigmoid(torch.stack([(u * F.normalize(h, dim=-1)).sum(-1) for h in pos_views]))
        negative = torch.sigmoid(torch.stack([(u * F.normalize(h, dim=-1)).sum(-1) for h in neg_views]))
        mean, negative_mean = positive.mean(0), negative.mean()
        pos_weight = (mean * torch.exp(-positive.var(0)).pow(2)).clamp(0, 1)
        neg_weight = (positive.max(0).values - negative_mean).clamp(0, 1) * (mean < negative_mean)
        return pos_weight, neg_weight

    @staticmethod
    @torch.no_grad()
    def pseudo_labels(similarities):
        """Each view's two sets of pseudo-labelled neighbours [batch, 10] (module docstring), from its cosine
        similarities [batch items, n_items] of the batch's items to every item: the items with the highest sum of the
        other views' probabilities plus twice this view's (probabilities: the softmax of a row), and the next 10 by
        this view alone (the first 10 of its top 20 that are not in the first set).

        Two [batch items, n_items] buffers serve every view: the softmax is recomputed (an ``exp`` in place) rather
        than kept per view; on the CPU a fresh tensor of that size costs more to page in than the ``exp``."""
        probability, total = torch.empty_like(similarities[0]), torch.zeros_like(similarities[0])

        def softmax(similarity):  # cosines lie in [-1, 1]: no maximum to subtract
            torch.exp(similarity, out=probability)
            return probability.div_(probability.sum(1, keepdim=True))

        for similarity in similarities:
            total.add_(softmax(similarity))
        labels = []
        for similarity in similarities:
            candidates = torch.topk(softmax(similarity), 2 * PSEUDO_LABELS, dim=-1).indices
            shared = torch.topk(probability.add_(total), PSEUDO_LABELS, dim=-1).indices
            fresh = ~(candidates[:, :, None] == shared[:, None, :]).any(-1)
            order = torch.sort((~fresh).to(torch.int8), dim=1, stable=True).indices[:, :PSEUDO_LABELS]
            labels.append((shared, candidates.gather(1, order)))
        return labels

    @staticmethod
    def neighbour_discrimination(shared, own, anchors, normed, exp_similarity):
        """InfoNCE of the batch's items (``anchors``, normalised) against their pseudo-labelled neighbours in one view
        (module docstring); ``exp_similarity`` is ``exp(anchors @ normed.T / TEMPERATURE)`` (without gradient)."""
        total = exp_product_sums(anchors / TEMPERATURE, normed, exp_products=exp_similarity)
        shared_score = torch.exp((anchors[:, None] * normed[shared]).sum(-1) / TEMPERATURE).sum(1)
        own_score = torch.exp((anchors[:, None] * normed[own]).sum(-1) / TEMPERATURE).sum(1)
        loss = -torch.log(shared_score / total + 1e-9) - torch.log(own_score / (total - shared_score) + 1e-9)
        return loss.mean()

    def _weighted_bpr(self, interaction, users, items, views):
        user, pos, neg = interaction[self.USER_ID], interaction[self.ITEM_ID], interaction[self.NEG_ITEM_ID]
        u = users[user]
        pos_weight, neg_weight = self.feedback_weights(u, [h[pos] for h in views.values()],
                                                       [h[neg] for h in views.values()])
        item_all = items + torch.stack(list(views.values())).mean(0)
        difference = (u * item_all[pos]).sum(-1) - (u * item_all[neg]).sum(-1)
        return -(F.logsigmoid(difference) * pos_weight + F.logsigmoid(-difference) * neg_weight).mean()

    def rec_loss(self, interaction):
        """The denoised BPR term (what an adversary perturbs)."""
        return self._weighted_bpr(interaction, *self.forward())

    def calculate_loss(self, interaction):
        users, items, views = self.forward()
        user, pos, neg = interaction[self.USER_ID], interaction[self.ITEM_ID], interaction[self.NEG_ITEM_ID]
        batch_users, batch_items = torch.unique(user), torch.unique(torch.cat([pos, neg]))
        # each view's cosine similarities of the batch's items to every item [batch items, n_items], computed once
        # (in float32, without gradient): the pseudo-labels' softmax, then, exponentiated over the temperature in
        # place, the discrimination's denominators (whose backward pass keeps them)
        normed = {v: F.normalize(h, dim=1) for v, h in views.items()}
        anchors = {v: n[batch_items] for v, n in normed.items()}
        with torch.no_grad(), torch.autocast(device_type=user.device.type, enabled=False):
            similarities = [torch.mm(anchors[v].float(), normed[v].float().T) for v in views]
            labels = self.pseudo_labels(similarities)
            for similarity in similarities:
                similarity.div_(TEMPERATURE).exp_()
        discrimination = sum(self.neighbour_discrimination(*labels[k], anchors[v], normed[v], similarities[k])
                             for k, v in enumerate(views)) / len(views)
        u = users[batch_users]
        content = torch.stack(list(views.values())).mean(0)
        logit_graph = u @ F.normalize(items[batch_items], dim=-1).T
        logit_content = u @ F.normalize(content[batch_items], dim=-1).T
        alignment = symmetric_bernoulli_kl(logit_graph, logit_content).mean()
        return self._weighted_bpr(interaction, users, items, views) + self.neighbor_weight * discrimination \
            + self.kl_weight * alignment
