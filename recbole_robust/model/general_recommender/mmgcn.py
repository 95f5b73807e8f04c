r"""
MMGCN
################################################
Reference:
    Yinwei Wei, Xiang Wang, Liqiang Nie, Xiangnan He, Richang Hong and Tat-Seng Chua. "MMGCN:
    Multi-modal Graph Convolution Network for Personalized Recommendation of Micro-video." in ACM MM 2019.

One graph convolution network per modality m on the user-item graph. Node inputs are a learned user
preference vector (users) and the item's features of m (items), projected by an MLP to
``latent_size`` when the features are larger; each layer l (eq. 1-5, concatenation off by default, as
the authors' code intends):

    h = LeakyReLU(mean_{j in N(i)} x_j W_l)                     (aggregation)
    x_hat = LeakyReLU(x W'_l) + e_id                            (with the shared ID embedding)
    x = LeakyReLU(h G_l + x_hat)                                (combination; concat: LeakyReLU([h, x_hat] G_l))

Initialisation as the authors' code: Xavier normal for the aggregation and linear layers and the first
combination layer, PyTorch's default for the later combination layers (their code never re-initialises
them; with the MG preset's lr 1e-4 this matters, see README).

The representation is the mean over modalities; y_ui = x_u . x_i; BPR loss plus ``reg_weight`` times
the mean squared ID embeddings of the batch and the users' preference vectors. Every modality of the
dataset is used (``modalities`` selects). Unlike MMRec's port, the ID embeddings and the preference
vectors are registered parameters, so they are trained as the paper intends.

Two options reproduce the MG authors' release (MMRec's port), used by the MG preset: ``train_id_embedding:
False`` keeps the ID embeddings and preference vectors at their random initialisation (in MMRec they are
plain tensors the optimiser never sees), ``latent_size`` as a mapping projects exactly the listed
modalities to the given size (MMRec: image features through an MLP to 256, the other modality
unprojected), and ``concat: True`` combines by concatenation (MMRec sets ``concate = "False"``, a
non-empty string, so its layers concatenate).
"""
import torch
import torch.nn.functional as F
from torch import nn

from recbole_robust.data.graphs import csr_transpose, mean_adjacency
from recbole_robust.model.layers import SparseMeanConv, by_rows
from recbole_robust.model.node_recommender import GraphNodeRecommender


class ModalityGCN(nn.Module):
    """MMGCN's graph convolution network of one modality."""

    def __init__(self, n_users, feat_dim, latent_size, id_dim, n_layers, trained_preference=True, concat=False):
        super().__init__()
        self.concat = concat
        in_dim = latent_size or feat_dim
        self.projection = nn.Linear(feat_dim, in_dim) if latent_size else None
        preference = nn.init.xavier_normal_(torch.empty(n_users, in_dim))
        if trained_preference:
            self.preference = nn.Parameter(preference)
        else:
            self.register_buffer("preference", preference)
        dims = [in_dim] + [id_dim] * n_layers
        self.convs = nn.ModuleList(SparseMeanConv(dims[l], dims[l]) for l in range(n_layers))
        self.linears = nn.ModuleList(nn.Linear(dims[l], id_dim) for l in range(n_layers))
        self.combines = nn.ModuleList(nn.Linear(dims[l] + (id_dim if concat else 0), id_dim) for l in range(n_layers))
        # the authors' initialisation: Xavier normal for the linear layers and the first combination layer, PyTorch's
        # default for the later combination layers (MMGCN's and MMRec's code never re-initialise g_layer2/3)
        for layer in list(self.linears) + [self.combines[0]]:
            nn.init.xavier_normal_(layer.weight)

    def forward(self, features, id_embedding, adjacency, adjacency_t):
        items = self.projection(features) if self.projection is not None else features
        users = F.normalize(self.preference)
        # row blocks of the first layer's input: users and items apart when the preference is fixed (the MG
        # preset), so that the first layer's backward pass computes gradients for the item rows only
        x = [users, F.normalize(items)] if not users.requires_grad else torch.cat([users, F.normalize(items)])
        for conv, linear, combine in zip(self.convs, self.linears, self.combines):
            h = F.leaky_relu(conv(x, adjacency, adjacency_t))
            x_hat = F.leaky_relu(by_rows(linear, x)) + id_embedding
            if self.concat:  # [h, x_hat] G as h G_h + x_hat G_x: no concatenated copy forward and backward
                d = h.shape[1]
                x = torch.addmm(combine.bias, h, combine.weight[:, :d].T)
                # in place where the dtypes agree; under autocast x is half precision and x_hat may not be
                x = x.addmm_(x_hat, combine.weight[:, d:].T) if x.dtype == x_hat.dtype == combine.weight.dtype \
                    else torch.addmm(x, x_hat, combine.weight[:, d:].T)
                x = F.leaky_relu(x)
            else:
                x = F.leaky_relu(combine(h) + x_hat)
        return x


class MMGCN(GraphNodeRecommender):
    r"""Multi-modal graph convolution network: one GCN per modality, averaged."""

    def __init__(self, config, dataset):
        super().__init__(config, dataset)  # ID embeddings, feature buffers, reg_weight (node_recommender.py)

        # define layers and loss
        users, items = dataset.interaction_edges()
        edges = torch.stack([users, items + self.n_users])
        edge_index = torch.cat([edges, edges.flip(0)], dim=1)
        # the mean over each node's neighbours as one CSR matrix (data/graphs.py: mean_adjacency)
        self.register_buffer("mean_adj", mean_adjacency(edge_index, self.n_users + self.n_items), persistent=False)
        self.register_buffer("mean_adj_t", csr_transpose(self.mean_adj), persistent=False)
        trained = config["train_id_embedding"] is not False
        if not trained:  # the release's fixed random ID embeddings
            fixed = self.id_embedding.detach()
            del self.id_embedding
            self.register_buffer("id_embedding", fixed)
        self.gcns = nn.ModuleDict({
            m: ModalityGCN(self.n_users, dataset.item_features[m].shape[1],
                           self._latent_size(config["latent_size"], m, dataset.item_features[m].shape[1]),
                           self.embedding_size, config["n_layers"], trained, bool(config["concat"]))
            for m in self.modalities
        })

    @staticmethod
    def _latent_size(latent_size, modality, feat_dim):
        """Projection size of a modality's features, or ``None`` for no projection."""
        if isinstance(latent_size, dict):
            return latent_size.get(modality)
        return latent_size if feat_dim > latent_size else None

    def forward(self):
        """Representations [n_users + n_items, d]: user u at row u, item i at row n_users + i."""
        reps = [self.gcns[m](getattr(self, f"features_{m}"), self.id_embedding, self.mean_adj, self.mean_adj_t)
                for m in self.modalities]
        return torch.stack(reps).mean(0)

    def calculate_loss(self, interaction):
        reg = self.id_regulariser(interaction) + sum((gcn.preference ** 2).mean() for gcn in self.gcns.values()) \
            if self.reg_weight else 0.0
        return self.rec_loss(interaction) + self.reg_weight * reg
