"""Graphs and layers shared by the graph recommenders (MMGCN, GRCN, FREEDOM, BM3, LayerGCN, SelfCF).

* ``user_item_edges``: the training interactions as a bipartite edge list (items offset by n_users);
* ``sym_norm_adjacency``: D^-1/2 A D^-1/2 of the user-item graph as a fixed ``torch.sparse`` matrix;
* ``knn_graph``: the item-item kNN graph of a feature matrix by cosine similarity (``torch.topk`` on
  blocks of rows, no Python loop over items), symmetrically normalised;
* ``LightGCNEncoder``: LightGCN's mean of propagated layers on that graph; ``pruned_adjacency`` and
  ``dropped_edges``: its pruned (FREEDOM, LayerGCN) and edge-dropout (SelfCF) versions;
* ``mean_adjacency``: the row-normalised adjacency of a fixed graph as a ``torch.sparse`` CSR matrix:
  mean aggregation over neighbours is then one sparse-dense product (``SparseMeanConv``, MMGCN);
* PyTorch Geometric ``MessagePassing`` layers where a layer needs per-edge work (GRCN's routing,
  attention and weighted sums over the refined graph).

Fixed, normalised aggregations are sparse-dense products on CSR matrices: on the CPU they are several
times faster than scatter-based message passing of the same graph, every training batch.
"""
import numpy as np
import torch
from torch import nn
from torch_geometric.nn import MessagePassing
from torch_geometric.utils import softmax


def user_item_edges(dataset):
    """``(users, items)`` LongTensors of the training interactions (RecBole ids)."""
    coo = dataset.inter_matrix(form="coo").astype(np.float32)
    return torch.from_numpy(coo.row.astype(np.int64)), torch.from_numpy(coo.col.astype(np.int64))


def sym_norm_values(rows, cols, n_rows, n_cols):
    """Values d_row^-1/2 d_col^-1/2 of the edges (rows[k], cols[k]) of an n_rows x n_cols graph."""
    ones = torch.ones(len(rows), device=rows.device)
    deg_r = torch.zeros(n_rows, device=rows.device).index_add_(0, rows, ones) + 1e-7
    deg_c = torch.zeros(n_cols, device=rows.device).index_add_(0, cols, ones) + 1e-7
    return deg_r[rows].pow(-0.5) * deg_c[cols].pow(-0.5)


def sym_norm_adjacency(users, items, n_users, n_items):
    """The (n_users + n_items)^2 normalised adjacency of the bipartite graph, sparse COO."""
    values = sym_norm_values(users, items, n_users, n_items)
    rows = torch.cat([users, items + n_users])
    cols = torch.cat([items + n_users, users])
    n = n_users + n_items
    return torch.sparse_coo_tensor(torch.stack([rows, cols]), torch.cat([values, values]), (n, n), check_invariants=False).coalesce()


def knn_neighbours(features, k, block_size=2048):
    """Indices [n, k] of each row's k most cosine-similar rows (itself included, as in FREEDOM)."""
    normed = features / features.norm(dim=1, keepdim=True).clamp_min(1e-12)
    blocks = [torch.topk(normed[s:s + block_size] @ normed.T, k, dim=1).indices
              for s in range(0, len(normed), block_size)]
    return torch.cat(blocks)


def knn_graph(features, k):
    """The symmetrically normalised kNN graph of ``features`` as a sparse [n, n] matrix."""
    n = features.shape[0]
    neighbours = knn_neighbours(features, k)
    rows = torch.arange(n, device=features.device).repeat_interleave(k)
    cols = neighbours.reshape(-1)
    deg = torch.zeros(n, device=features.device).index_add_(0, rows, torch.ones(len(rows), device=features.device)) + 1e-7
    values = deg[rows].pow(-0.5) * deg[cols].pow(-0.5)
    return torch.sparse_coo_tensor(torch.stack([rows, cols]), values, (n, n), check_invariants=False).coalesce()


class _FixedGraphProduct(torch.autograd.Function):
    """``adjacency @ x`` whose backward is ``adjacency_t @ grad`` with a transpose computed once.

    torch's own backward of a CSR product transposes the matrix on every call; a fixed graph's
    transpose is built once instead (2-3x faster per training batch on TikTok's graph).
    """

    @staticmethod
    def forward(ctx, adjacency, adjacency_t, x):
        ctx.adjacency_t = adjacency_t
        return _sparse_dense(adjacency, x)

    @staticmethod
    def backward(ctx, grad):
        return None, None, _sparse_dense(ctx.adjacency_t, grad)


def _sparse_dense(adjacency, x):
    """``adjacency @ x``. On the CPU, ``torch.sparse.mm`` of a CSR matrix fills a zero result, multiplies
    into a temporary and copies it (three passes over the output); ``addmm`` with ``beta=0`` into an
    empty output makes one (the input is then ignored, NaN included, as its documentation states)."""
    if adjacency.device.type != "cpu" or adjacency.layout != torch.sparse_csr:
        return torch.sparse.mm(adjacency, x)
    out = x.new_empty(adjacency.shape[0], x.shape[1])
    return torch.addmm(out, adjacency, x.contiguous(), beta=0, out=out)


def graph_product(adjacency, x, adjacency_t=None):
    """``adjacency @ x`` for a fixed CSR graph; ``adjacency_t`` its transpose (``None``: symmetric)."""
    return _FixedGraphProduct.apply(adjacency, adjacency if adjacency_t is None else adjacency_t, x)


def csr_transpose(adjacency):
    return adjacency.to_sparse_coo().t().coalesce().to_sparse_csr()


def mean_adjacency(edge_index, n_nodes):
    """[n, n] CSR matrix with 1/deg(i) at (i, j) for every edge j -> i: ``A @ x`` = mean of the neighbours.

    A node without edges gets a zero row (as PyG's mean aggregation gives it).
    """
    source, target = edge_index
    deg = torch.zeros(n_nodes, device=edge_index.device).index_add_(0, target, torch.ones(len(target), device=edge_index.device))
    values = 1.0 / deg[target]
    return torch.sparse_coo_tensor(torch.stack([target, source]), values, (n_nodes, n_nodes)).coalesce().to_sparse_csr()


class SparseMeanConv(nn.Module):
    """x' = mean_{j in N(i)} x_j W (MMGCN's aggregation layer, eq. 1), with ``mean_adjacency`` and its
    transpose."""

    def __init__(self, in_channels, out_channels):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(in_channels, out_channels))
        nn.init.xavier_normal_(self.weight)

    def forward(self, x, adjacency, adjacency_t):
        """``x``: the node features, or a list of row blocks of them (``by_rows``)."""
        return graph_product(adjacency, by_rows(lambda rows: rows @ self.weight, x), adjacency_t)


def by_rows(function, x):
    """``function(x)`` of a tensor, or of a list of row blocks, concatenated: a block that needs no gradient
    then costs no gradient computation in the backward pass."""
    if isinstance(x, torch.Tensor):
        return function(x)
    return torch.cat([function(rows) for rows in x])


class WeightedSumConv(MessagePassing):
    """x' = sum_{j in N(i)} w_ji x_j (GRCN's convolution on the refined graph)."""

    def __init__(self):
        super().__init__(aggr="add")

    def forward(self, x, edge_index, edge_weight):
        return self.propagate(edge_index, x=x, edge_weight=edge_weight)

    def message(self, x_j, edge_weight):
        return x_j * edge_weight.view(-1, 1)


class DotAttentionConv(MessagePassing):
    """x' = sum_j alpha_ij x_j, alpha_ij = softmax_j(x_i . x_j) (GRCN's routing / attention layer).

    The attention of the last call is kept in ``alpha`` (one value per edge).
    """

    def __init__(self):
        super().__init__(aggr="add")
        self.alpha = None

    def forward(self, x, edge_index):
        return self.propagate(edge_index, x=x)

    def message(self, x_i, x_j, index, size_i):
        self.alpha = softmax((x_i * x_j).sum(-1), index, num_nodes=size_i)
        return x_j * self.alpha.view(-1, 1)


def pruned_adjacency(users, items, n_users, n_items, ratio, probability=None):
    """The normalised user-item graph (CSR) keeping ``1 - ratio`` of the edges ``(users[k], items[k])``,
    drawn without replacement with weights ``probability`` (``None``: uniformly). FREEDOM's and LayerGCN's
    degree-sensitive pruning pass ``sym_norm_values`` of the full graph: edges of high-degree nodes go first."""
    n_keep = int(len(users) * (1 - ratio))
    if probability is None:
        keep = torch.randperm(len(users), device=users.device)[:n_keep]
    else:
        keep = torch.multinomial(probability, n_keep)
    return sym_norm_adjacency(users[keep], items[keep], n_users, n_items).to_sparse_csr()


def dropped_edges(adjacency, rate):
    """``adjacency`` (sparse COO) with each stored entry kept with probability ``1 - rate`` and scaled by
    ``1 / (1 - rate)`` (the sparse dropout of BUIR's and SelfCF's LightGCN encoder)."""
    keep = torch.rand(adjacency._nnz(), device=adjacency.device) >= rate
    return torch.sparse_coo_tensor(adjacency.indices()[:, keep], adjacency.values()[keep] / (1 - rate),
                                   adjacency.shape, check_invariants=False)


class LightGCNEncoder(nn.Module):
    """LightGCN propagation (He et al., SIGIR 2020) over the training split's user-item graph:
    the mean of E, A E, ..., A^L E with A = D^-1/2 [[0, R], [R^T, 0]] D^-1/2, as one CSR matrix.

    ``forward(users, items, adjacency=None)`` returns the propagated (users, items); ``adjacency``
    replaces the full graph: a symmetric CSR graph (e.g. FREEDOM's pruned one) or a COO one that need
    not be symmetric (SelfCF's edge dropout; then torch's own sparse product and backward). Used by
    FREEDOM, BM3 and SelfCF.
    """

    def __init__(self, dataset, n_layers, device=None):
        super().__init__()
        self.n_layers = n_layers
        self.n_users, self.n_items = dataset.user_num, dataset.item_num
        users, items = user_item_edges(dataset)
        adjacency = sym_norm_adjacency(users, items, self.n_users, self.n_items)
        self.register_buffer("norm_adj", adjacency.to(device).to_sparse_csr(), persistent=False)

    def forward(self, users, items, adjacency=None):
        adjacency = self.norm_adj if adjacency is None else adjacency
        ego = torch.cat([users, items])
        layers = [ego]
        for _ in range(self.n_layers):
            ego = graph_product(adjacency, ego) if adjacency.layout == torch.sparse_csr else torch.sparse.mm(adjacency, ego)
            layers.append(ego)
        out = torch.stack(layers).mean(0)
        return out[: self.n_users], out[self.n_users:]
