r"""
GRCN
################################################
Reference:
    Yinwei Wei, Xiang Wang, Liqiang Nie, Xiangnan He and Tat-Seng Chua. "Graph-Refined Convolutional
    Network for Multimedia Recommendation with Implicit Feedback." in ACM MM 2020.

* Graph refining, per modality m: item content f_i = LeakyReLU(W_m x_i) and a user preference p_u
  (both L2-normalised); ``n_routing`` routing iterations p_u <- normalise(p_u + sum_i alpha_ui f_i)
  with alpha_ui = softmax over u's items of p_u . f_i; then one attention layer over both edge
  directions gives each edge an affinity alpha_m and the content representation x + x_hat.
* Edge weight: max over modalities of alpha_m times a learned per-node, per-modality confidence
  (the ``confid`` mode of the authors' code), passed through ReLU: pruning of false-positive edges.
* Graph convolution on the refined graph: two weighted-sum layers over L2-normalised ID embeddings,
  e + e^1 + e^2.
* Representation: [ID representation, content representation of every modality] concatenated;
  y_ui = x_u . x_i; BPR loss plus ``reg_weight`` times mean squared ID embeddings of the batch and
  the batch users' preferences.
"""
import torch
import torch.nn.functional as F
from torch import nn

from recbole_robust.model.node_recommender import GraphNodeRecommender


class ContentGraph(nn.Module):
    """GRCN's graph refining layer of one modality (routing + attention)."""

    def __init__(self, n_users, feat_dim, latent_size, n_routing):
        super().__init__()
        self.n_users, self.n_routing = n_users, n_routing
        self.preference = nn.Parameter(nn.init.xavier_normal_(torch.empty(n_users, latent_size)))
        self.projection = nn.Linear(feat_dim, latent_size)
        nn.init.xavier_normal_(self.projection.weight)
        from recbole_robust.model.message_passing import DotAttentionConv  # PyG, imported when GRCN is built

        self.attention = DotAttentionConv()

    def forward(self, features, item_to_user, both_directions):
        items = F.normalize(F.leaky_relu(self.projection(features)))
        preference = F.normalize(self.preference)
        for _ in range(self.n_routing):
            x = torch.cat([preference, items])
            preference = F.normalize(preference + self.attention(x, item_to_user)[: self.n_users])
        x = torch.cat([preference, items])
        return x + self.attention(x, both_directions), self.attention.alpha


class GRCN(GraphNodeRecommender):
    r"""Graph-refined convolutional network: content-refined edge weights for an ID graph convolution."""

    def __init__(self, config, dataset):
        super().__init__(config, dataset)  # ID embeddings, feature buffers, reg_weight (node_recommender.py)

        # define layers and loss
        from recbole_robust.model.message_passing import WeightedSumConv  # PyG, imported when GRCN is built

        users, items = dataset.interaction_edges()
        item_to_user = torch.stack([items + self.n_users, users])  # messages from items to their users
        self.register_buffer("item_to_user", item_to_user, persistent=False)
        self.register_buffer("edge_index", torch.cat([item_to_user, item_to_user.flip(0)], dim=1), persistent=False)
        n_nodes = self.n_users + self.n_items
        self.confidence = nn.Parameter(nn.init.xavier_normal_(torch.empty(n_nodes, len(self.modalities))))
        self.content_graphs = nn.ModuleDict({
            m: ContentGraph(self.n_users, dataset.item_features[m].shape[1], config["latent_size"], config["n_routing"])
            for m in self.modalities
        })
        self.convs = nn.ModuleList([WeightedSumConv(), WeightedSumConv()])

    def forward(self):
        contents, affinities = [], []
        for m in self.modalities:
            content, alpha = self.content_graphs[m](getattr(self, f"features_{m}"), self.item_to_user, self.edge_index)
            contents.append(content)
            affinities.append(alpha)
        # per edge: max over modalities of affinity x confidence of the edge's source node
        confidence = self.confidence[self.edge_index[0]]
        weight = torch.relu((torch.stack(affinities, dim=1) * confidence).max(dim=1).values)
        x = F.normalize(self.id_embedding)
        x1 = self.convs[0](x, self.edge_index, weight)
        x2 = self.convs[1](x1, self.edge_index, weight)
        return torch.cat([x + x1 + x2] + contents, dim=1)

    def calculate_loss(self, interaction):
        user = interaction[self.USER_ID]
        reg = self.id_regulariser(interaction) + sum((g.preference[user] ** 2).mean() for g in self.content_graphs.values())
        return self.rec_loss(interaction) + self.reg_weight * reg
