"""Graphs and layers shared by the graph recommenders (MMGCN, GRCN, FREEDOM, BM3, LayerGCN, SelfCF).

* ``user_item_edges``: the training interactions as a bipartite edge list (items offset by n_users);
* ``sym_norm_adjacency``: D^-1/2 A D^-1/2 of the user-item graph as a fixed ``torch.sparse`` matrix;
* ``knn_graph``: the item-item kNN graph of a feature matrix by cosine similarity (``torch.topk`` on
  blocks of rows, no Python loop over items), symmetrically normalised;
* ``LightGCNEncoder``: LightGCN's mean of propagated layers on that graph; ``EdgePruning`` and
  ``EdgeDropout``: its pruned (FREEDOM, LayerGCN) and edge-dropout (SelfCF) versions;
* ``mean_adjacency``: the row-normalised adjacency of a fixed graph as a ``torch.sparse`` CSR matrix:
  mean aggregation over neighbours is then one sparse-dense product (``SparseMeanConv``, MMGCN);
* PyTorch Geometric ``MessagePassing`` layers where a layer needs per-edge work (GRCN's routing,
  attention and weighted sums over the refined graph).

Fixed, normalised aggregations are sparse-dense products on CSR matrices: on the CPU they are several
times faster than scatter-based message passing of the same graph, every training batch.
"""
import hashlib
import os
import zipfile

import numpy as np
import scipy.sparse as sp
import torch
from torch import nn
from torch_geometric.nn import MessagePassing
from torch_geometric.utils import softmax

from recbole_robust.errors import RecBoleRobustError
from recbole_robust.utils import atomic_write


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


class EdgePruning(nn.Module):
    """Edge dropout of the training split's user-item graph before every epoch (FREEDOM, LayerGCN):
    ``self(degree_sensitive=True)`` is the normalised graph (CSR) keeping ``1 - ratio`` of the edges
    ``(users[k], items[k])``, drawn without replacement with probability proportional to d_u^-1/2 d_i^-1/2
    (edges of high-degree nodes are dropped first), or uniformly; ``None`` (the full graph) when ``ratio`` is 0."""

    def __init__(self, users, items, n_users, n_items, ratio):
        super().__init__()
        if not 0 <= ratio < 1:
            raise RecBoleRobustError(f"dropout (edge pruning ratio) must be in [0, 1), got {ratio}")
        self.ratio, self.n_users, self.n_items = ratio, n_users, n_items
        self.register_buffer("edge_users", users, persistent=False)
        self.register_buffer("edge_items", items, persistent=False)
        self.register_buffer("edge_probability", sym_norm_values(users, items, n_users, n_items), persistent=False)

    def forward(self, degree_sensitive=True):
        if self.ratio <= 0:
            return None
        n_keep = int(len(self.edge_users) * (1 - self.ratio))
        if degree_sensitive:
            keep = torch.multinomial(self.edge_probability, n_keep)
        else:
            keep = torch.randperm(len(self.edge_users), device=self.edge_users.device)[:n_keep]
        return sym_norm_adjacency(self.edge_users[keep], self.edge_items[keep], self.n_users, self.n_items).to_sparse_csr()


class EdgeDropout(nn.Module):
    """Sparse dropout of a fixed CSR graph (BUIR's and SelfCF's LightGCN encoder): ``self(rate)`` returns the
    graph with each stored entry kept with probability ``1 - rate`` and scaled by ``1 / (1 - rate)``, and its
    transpose, both CSR. The sparsity pattern is kept (dropped entries are zeros), so that the products stay
    CSR products with a transpose that is a fixed permutation of the values (computed once)."""

    def __init__(self, adjacency):
        super().__init__()
        n = adjacency.shape[0]
        crow, col = adjacency.crow_indices(), adjacency.col_indices()
        rows = torch.repeat_interleave(torch.arange(n, device=col.device), crow.diff())
        order = torch.argsort(col * n + rows)  # the entries in the transpose's row-major order
        self.shape = adjacency.shape
        self.register_buffer("crow", crow, persistent=False)
        self.register_buffer("col", col, persistent=False)
        self.register_buffer("values", adjacency.values(), persistent=False)
        self.register_buffer("order", order, persistent=False)
        t_crow = torch.cat([crow.new_zeros(1), torch.cumsum(torch.bincount(col, minlength=n), 0)])
        self.register_buffer("t_crow", t_crow, persistent=False)
        self.register_buffer("t_col", rows[order], persistent=False)

    def forward(self, rate):
        keep = torch.rand(len(self.values), device=self.values.device) >= rate
        values = self.values * keep / (1 - rate)
        graph = torch.sparse_csr_tensor(self.crow, self.col, values, self.shape)
        transpose = torch.sparse_csr_tensor(self.t_crow, self.t_col, values[self.order], self.shape)
        return graph, transpose


class LightGCNEncoder(nn.Module):
    """LightGCN propagation (He et al., SIGIR 2020) over the training split's user-item graph:
    the mean of E, A E, ..., A^L E with A = D^-1/2 [[0, R], [R^T, 0]] D^-1/2, as one CSR matrix.

    ``forward(users, items, adjacency=None, adjacency_t=None)`` returns the propagated (users, items);
    ``adjacency`` (CSR) replaces the full graph, e.g. FREEDOM's pruned one, with its transpose
    ``adjacency_t`` where it is not symmetric (SelfCF's edge dropout). Used by FREEDOM, BM3 and SelfCF.
    """

    def __init__(self, dataset, n_layers, device=None):
        super().__init__()
        self.n_layers = n_layers
        self.n_users, self.n_items = dataset.user_num, dataset.item_num
        users, items = user_item_edges(dataset)
        adjacency = sym_norm_adjacency(users, items, self.n_users, self.n_items)
        self.register_buffer("norm_adj", adjacency.to(device).to_sparse_csr(), persistent=False)

    def forward(self, users, items, adjacency=None, adjacency_t=None):
        adjacency = self.norm_adj if adjacency is None else adjacency
        ego = torch.cat([users, items])
        layers = [ego]
        for _ in range(self.n_layers):
            ego = graph_product(adjacency, ego, adjacency_t)
            layers.append(ego)
        out = torch.stack(layers).mean(0)
        return out[: self.n_users], out[self.n_users:]


def user_cooccurrence_graph(users, items, n_users, n_items, top=200):
    """DualGNN's and DRAGON's user-user graph: each user's ``top`` users with the most items in common.

    What MMRec's ``dualgnn-gen-u-u-matrix.py`` writes to ``user_graph_dict.npy`` (co-occurrence counts of the
    training interactions, a user's own count left out, its ``top`` largest kept), built here with one sparse
    product. Returns CSR arrays ``(indptr, neighbours, counts)``: a row lists its neighbours by count,
    largest first (ties by user id).
    """
    users, items = np.asarray(users), np.asarray(items)
    r = sp.csr_matrix((np.ones(len(users), dtype=np.float32), (users, items)), shape=(n_users, n_items))
    r.data[:] = 1.0  # a repeated interaction counts once
    c = (r @ r.T).tocoo()
    off_diagonal = c.row != c.col
    row, col, count = c.row[off_diagonal], c.col[off_diagonal], c.data[off_diagonal]
    order = np.lexsort((col, -count, row))
    row, col, count = row[order], col[order], count[order]
    starts = np.searchsorted(row, np.arange(n_users))
    rank = np.arange(len(row)) - starts[row]
    keep = rank < top
    row, col, count = row[keep], col[keep], count[keep]
    indptr = np.concatenate([[0], np.cumsum(np.bincount(row, minlength=n_users))])
    return indptr.astype(np.int64), col.astype(np.int64), count.astype(np.float32)


def sampled_user_graph(indptr, neighbours, counts, k, generator=None):
    """DualGNN's / DRAGON's per-epoch user graph: each user's first ``k`` neighbours, weighted by the softmax of
    their counts, as an [n_users, n_users] CSR matrix. A user with fewer than ``k`` (but some) neighbours gets
    random repeats of them up to ``k`` (repeats add to a neighbour's weight, as in the authors' code, which
    draws them from the growing list; here from the original one); a user without any gets an empty row."""
    n_users = len(indptr) - 1
    degree = torch.from_numpy(np.diff(indptr))
    kept = degree.clamp(max=k)
    rows = torch.arange(n_users).repeat_interleave(kept)
    position = torch.arange(len(rows)) - torch.cumsum(kept, 0).sub(kept).repeat_interleave(kept)
    short = (degree > 0) & (degree < k)
    extra_rows = torch.arange(n_users)[short].repeat_interleave(k - degree[short])
    extra_position = (torch.rand(len(extra_rows), generator=generator) * degree[extra_rows]).long()
    rows, position = torch.cat([rows, extra_rows]), torch.cat([position, extra_position])
    entry = torch.from_numpy(indptr[:-1])[rows] + position
    cols, values = torch.from_numpy(neighbours)[entry], torch.from_numpy(counts)[entry]
    row_max = torch.full((n_users,), -float("inf")).scatter_reduce(0, rows, values, "amax")
    weights = (values - row_max[rows]).exp()
    weights = weights / torch.zeros(n_users).index_add_(0, rows, weights)[rows]
    return torch.sparse_coo_tensor(torch.stack([rows, cols]), weights, (n_users, n_users),
                                   check_invariants=False).coalesce().to_sparse_csr()


def cached_graph(config, name, key, compute, valid):
    """``compute()`` (a dict of numpy arrays), cached beside the plugin's build of the dataset.

    The file is ``<build>/graphs/<name>-<sha256 of key>.npz``: ``key`` holds everything the graph depends on
    (the training interactions, the sizes and settings), so another split or setting is another file, and a
    rebuilt dataset starts without graphs. Written atomically, read with ``allow_pickle=False``; a stored file
    that cannot be read or that ``valid(arrays)`` rejects (wrong keys, shapes or ranges) is recomputed and
    replaced. Datasets the plugin does not build (RecBole's own atomic files) are computed every time.
    """
    if not config["plugin_build"]:
        return compute()
    digest = hashlib.sha256()
    for part in key:
        digest.update(np.ascontiguousarray(part).tobytes() if isinstance(part, np.ndarray) else repr(part).encode())
    path = os.path.join(config["data_path"], "graphs", f"{name}-{digest.hexdigest()[:16]}.npz")
    if os.path.isfile(path):
        try:
            with np.load(path, allow_pickle=False) as stored:
                arrays = {k: stored[k] for k in stored.files}
            if valid(arrays):
                return arrays
        except (OSError, ValueError, zipfile.BadZipFile):
            pass
    arrays = compute()

    def write(tmp):
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)
    atomic_write(path, write)
    return arrays


def valid_user_graph(arrays, n_users):
    """``user_cooccurrence_graph``'s CSR arrays, well-formed for ``n_users`` users."""
    try:
        indptr, neighbours, counts = arrays["indptr"], arrays["neighbours"], arrays["counts"]
    except KeyError:
        return False
    return (indptr.ndim == neighbours.ndim == counts.ndim == 1 and len(indptr) == n_users + 1 and indptr[0] == 0
            and bool(np.all(np.diff(indptr) >= 0)) and indptr[-1] == len(neighbours) == len(counts)
            and bool(np.all((neighbours >= 0) & (neighbours < n_users))) and bool(np.all(np.isfinite(counts))))


def modality_weights(weights, modalities):
    """``{modality: weight}`` for every modality: those ``weights`` names, the rest share what is left equally."""
    weights = weights or {}
    unknown = set(weights) - set(modalities)
    if unknown:
        raise RecBoleRobustError(f"modality_weights names unknown modalities: {sorted(unknown)}")
    rest = [m for m in modalities if m not in weights]
    left = 1.0 - sum(weights.values())
    return {**weights, **{m: left / len(rest) for m in rest}}


def mixed_knn_graph(features, weights, k):
    """sum_m weights[m] * knn_graph(features[m], k) as one CSR matrix (FREEDOM's and DRAGON's item-item graph)."""
    graphs = [w * knn_graph(features[m], k) for m, w in weights.items()]
    return torch.stack(graphs).sum(0).coalesce().to_sparse_csr()


def weighted_knn(features, k, block_size=2048):
    """LATTICE's kNN graph: each row's ``k`` most cosine-similar rows (itself included) with their similarity
    as the edge value, then D^-1/2 S D^-1/2 with D the row sums (LATTICE's ``compute_normalized_laplacian``).
    Returns ``(indices [2, n k], values [n k])``; the values are differentiable in ``features`` (the
    neighbours are chosen without gradient)."""
    normed = features / features.norm(dim=1, keepdim=True).clamp_min(1e-12)
    with torch.no_grad():
        neighbours = knn_neighbours(normed, k, block_size)
    n = features.shape[0]
    rows = torch.arange(n, device=features.device).repeat_interleave(k)
    cols = neighbours.reshape(-1)
    values = (normed[rows] * normed[cols]).sum(-1)
    return torch.stack([rows, cols]), values


def normalized_sum(graphs, n):
    """sum_g w_g S_g of weighted graphs ``[(weight, indices, values)]``, then D^-1/2 (.) D^-1/2 with D the row
    sums, as one sparse COO matrix whose values keep their gradient."""
    indices = torch.cat([i for _, i, _ in graphs], 1)
    values = torch.cat([w * v for w, _, v in graphs])
    row_sum = torch.zeros(n, device=values.device, dtype=values.dtype).index_add(0, indices[0], values)
    inv_sqrt = row_sum.pow(-0.5)
    inv_sqrt = torch.where(torch.isinf(inv_sqrt), torch.zeros_like(inv_sqrt), inv_sqrt)
    return torch.sparse_coo_tensor(indices, values * inv_sqrt[indices[0]] * inv_sqrt[indices[1]], (n, n),
                                   check_invariants=False).coalesce()
