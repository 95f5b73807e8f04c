"""Layers shared by the graph recommenders (MMGCN, FREEDOM, BM3, LayerGCN, SelfCF, SLMRec, LATTICE, DRAGON); the
graphs they propagate over are built by the data layer (``data/graphs.py``).

* ``graph_product``: a fixed sparse graph times dense features, with the graph's transpose built once for the
  backward pass;
* ``LightGCNEncoder``: LightGCN's mean of propagated layers on the split's normalised user-item graph;
  ``EdgePruning`` and ``EdgeDropout``: its pruned (FREEDOM, LayerGCN) and edge-dropout (SelfCF) versions;
* ``SparseMeanConv``: mean aggregation over neighbours as one sparse-dense product (MMGCN);
* ``exp_product_sums``: the row sums of ``exp(a @ b.T)``, contrastive losses' denominators (the InfoNCE of MGCN,
  SMORE, LGMRec and PGL; DAMRS's neighbour discrimination).

GRCN's per-edge layers (routing, attention) are PyTorch Geometric ``MessagePassing`` layers
(``message_passing.py``). Fixed, normalised aggregations are sparse-dense products on CSR matrices: on the CPU
they are several times faster than scatter-based message passing of the same graph, every training batch.
"""
import torch
from torch import nn

from recbole_robust.data.graphs import DEGREE_OFFSET, norm_adjacency, sym_norm
from recbole_robust.errors import RecBoleRobustError


class _FixedGraphProduct(torch.autograd.Function):
    """``adjacency @ x`` whose backward is ``adjacency_t @ grad`` with a transpose computed once.

    torch's own backward of a CSR product transposes the matrix on every call; a fixed graph's
    transpose is built once instead (2-3x faster per training batch on TikTok's graph).

    Under mixed precision (``enable_amp``: autocast to bfloat16 on the CPU, float16 on CUDA) the product is computed
    in the graph's float32, as ``torch.amp.custom_fwd(cast_inputs=torch.float32)`` does, on any device: sparse
    kernels have no half-precision CPU version, and a sum over many neighbours keeps its precision. The result is
    float32 (autocast casts it where the next operation wants half precision); the gradient goes back in ``x``'s
    dtype.
    """

    @staticmethod
    def forward(ctx, adjacency, adjacency_t, x):
        ctx.adjacency_t, ctx.dtype = adjacency_t, x.dtype
        with torch.autocast(device_type=x.device.type, enabled=False):
            return _sparse_dense(adjacency, x.to(adjacency.dtype))

    @staticmethod
    def backward(ctx, grad):
        with torch.autocast(device_type=grad.device.type, enabled=False):
            return None, None, _sparse_dense(ctx.adjacency_t, grad.to(ctx.adjacency_t.dtype)).to(ctx.dtype)


def _sparse_dense(adjacency, x):
    """``adjacency @ x``. On the CPU, ``torch.sparse.mm`` of a CSR matrix fills a zero result, multiplies
    into a temporary and copies it (three passes over the output); ``addmm`` with ``beta=0`` into an
    empty output makes one (the input is then ignored, NaN included, as its documentation states)."""
    if adjacency.device.type != "cpu" or adjacency.layout != torch.sparse_csr:
        return torch.sparse.mm(adjacency, x)
    out = x.new_empty(adjacency.shape[0], x.shape[1])
    return torch.addmm(out, adjacency, x.contiguous(), beta=0, out=out)


def sparse_product(adjacency, x):
    """``torch.sparse.mm(adjacency, x)`` of a graph that is learned (its values need gradients), in the graph's
    float32 under mixed precision too (see ``_FixedGraphProduct``)."""
    with torch.autocast(device_type=x.device.type, enabled=False):
        return torch.sparse.mm(adjacency, x.to(adjacency.dtype))


def graph_product(adjacency, x, adjacency_t=None):
    """``adjacency @ x`` for a fixed CSR graph; ``adjacency_t`` its transpose (``None``: symmetric)."""
    return _FixedGraphProduct.apply(adjacency, adjacency if adjacency_t is None else adjacency_t, x)


class _ExpProductSums(torch.autograd.Function):
    """``s_u = sum_v c_v exp(a_u . b_v)`` (see ``exp_product_sums``), in float32 or wider (autocast off, as
    ``custom_fwd(cast_inputs=float32)``).

    One [U, V] matrix is made (the products, exponentiated in place) and kept for the backward pass, which scales the
    small [U, d] / [V, d] factors instead of the matrix: ``grad_a = g * (P @ (c * b))``, ``grad_b = c * (P^T @ (g *
    a))``. Autograd's own version makes three more [U, V] tensors (the exp's output, the sum's expanded gradient,
    the exp's gradient); each is a fresh allocation, page-faulted in (on the CPU a new 16 MiB tensor costs more than
    the exp computed into it)."""

    @staticmethod
    def forward(ctx, a, b, col_weights, exp_products):
        ctx.dtypes = a.dtype, b.dtype
        dtype = torch.promote_types(torch.promote_types(a.dtype, b.dtype), torch.float32)
        col_weights = None if col_weights is None else col_weights.to(dtype)
        with torch.autocast(device_type=a.device.type, enabled=False):
            a, b = a.to(dtype), b.to(dtype)
            products = torch.mm(a, b.T).exp_() if exp_products is None else exp_products.to(dtype)
            sums = products.sum(1) if col_weights is None else products @ col_weights
        ctx.save_for_backward(a, b, products, col_weights)
        return sums

    @staticmethod
    def backward(ctx, grad):
        a, b, products, col_weights = ctx.saved_tensors
        with torch.autocast(device_type=a.device.type, enabled=False):
            coef = grad.to(products.dtype).unsqueeze(1)
            grad_a = coef * (products @ (b if col_weights is None else col_weights.unsqueeze(1) * b))
            grad_b = products.T @ (coef * a)
            if col_weights is not None:
                grad_b = col_weights.unsqueeze(1) * grad_b
        return grad_a.to(ctx.dtypes[0]), grad_b.to(ctx.dtypes[1]), None, None


def exp_product_sums(a, b, col_weights=None, exp_products=None):
    """``[U]``: ``sum_v c_v exp(a_u . b_v)`` of the rows of ``a`` [U, d] against the rows of ``b`` [V, d], with
    column weights ``c`` [V] (``None``: all 1), differentiable in ``a`` and ``b``, in float32 under mixed precision.

    ``exp_products``: ``exp(a @ b.T)``, when the caller has it already (computed without gradient); it is kept for
    the backward pass and must not be changed before it. The caller keeps each logit small (unit rows over a
    temperature): no maximum is subtracted."""
    return _ExpProductSums.apply(a, b, col_weights, exp_products)


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
        self.register_buffer("edge_probability", sym_norm(users, items, n_users, n_items, offset=DEGREE_OFFSET),
                             persistent=False)

    def forward(self, degree_sensitive=True):
        if self.ratio <= 0:
            return None
        n_keep = int(len(self.edge_users) * (1 - self.ratio))
        if degree_sensitive:
            keep = torch.multinomial(self.edge_probability, n_keep)
        else:
            keep = torch.randperm(len(self.edge_users), device=self.edge_users.device)[:n_keep]
        return norm_adjacency(self.edge_users[keep], self.edge_items[keep], self.n_users, self.n_items).to_sparse_csr()


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
    ``adjacency_t`` where it is not symmetric (SelfCF's edge dropout). Used by FREEDOM, BM3, SelfCF and SLMRec.
    """

    def __init__(self, dataset, n_layers, device=None):
        super().__init__()
        self.n_layers = n_layers
        self.n_users, self.n_items = dataset.user_num, dataset.item_num
        self.register_buffer("norm_adj", dataset.norm_adjacency().to(device), persistent=False)

    def forward(self, users, items, adjacency=None, adjacency_t=None):
        adjacency = self.norm_adj if adjacency is None else adjacency
        ego = torch.cat([users, items])
        out = ego
        for _ in range(self.n_layers):  # a running sum: no stacked copy of the layers, forward or backward
            ego = graph_product(adjacency, ego, adjacency_t)
            out = out + ego
        out = out / (self.n_layers + 1)
        return out[: self.n_users], out[self.n_users:]


