"""The graphs the graph recommenders propagate over, built by the data layer (as RecBole-GNN's dataset builds its
graph); the layers that use them are the models' (``model/layers.py``).

* ``GraphDataset`` (``data/dataset.py``) gives every plugin model its split's graphs: the interactions as a
  bipartite edge list, the normalised user-item adjacency, and DRAGON's / DualGNN's user-user co-occurrence
  graph, cached on disk beside the dataset's build (``cached_graph``);
* ``sym_norm``: the one symmetric normalisation, D_r^-1/2 A D_c^-1/2, of every graph here (user-item, kNN,
  LATTICE's similarity-weighted graphs);
* item-item kNN graphs of feature matrices by cosine similarity (``torch.topk`` on blocks of rows, no Python loop
  over items): binary (FREEDOM, DRAGON) or similarity-weighted (LATTICE), and their weighted mixtures;
* ``mean_adjacency``: the row-normalised adjacency (mean aggregation, MMGCN), and ``sampled_user_graph`` (the
  per-epoch user graph of DRAGON and DualGNN).

Fixed graphs are ``torch.sparse`` matrices, CSR where a model propagates over them every batch.
"""
import hashlib
import os
import zipfile

import numpy as np
import scipy.sparse as sp
import torch

from recbole_robust.errors import RecBoleRobustError
from recbole_robust.utils import atomic_write

DEGREE_OFFSET = 1e-7
"""Added to the user-item graph's degrees before d^-1/2, as LightGCN / FREEDOM in MMRec do (a node without
edges would divide by zero)."""


def sym_norm(rows, cols, n_rows, n_cols=None, values=None, offset=0.0):
    """Values d_r^-1/2 a d_c^-1/2 of the entries (rows[k], cols[k], a = values[k], default 1) of a sparse matrix.

    Bipartite (``n_cols`` given): d_r are the row sums, d_c the column sums (the user-item graph as its
    users x items block). Square (``n_cols`` None): D is the row sums on both sides (kNN graphs, whose row i lists
    i's neighbours). ``offset`` is added to every degree; a zero degree otherwise gives 0, not infinity.
    """
    values = torch.ones(len(rows), device=rows.device) if values is None else values
    deg_r = torch.zeros(n_rows, device=rows.device, dtype=values.dtype).index_add(0, rows, values) + offset
    deg_c = deg_r if n_cols is None else torch.zeros(n_cols, device=rows.device, dtype=values.dtype).index_add(
        0, cols, values) + offset
    inv_r, inv_c = (torch.where(d == 0, torch.zeros_like(d), d.pow(-0.5)) for d in (deg_r, deg_c))
    return inv_r[rows] * values * inv_c[cols]


def user_item_edges(dataset):
    """``(users, items)`` LongTensors of a split's interactions (RecBole ids)."""
    coo = dataset.inter_matrix(form="coo").astype(np.float32)
    return torch.from_numpy(coo.row.astype(np.int64)), torch.from_numpy(coo.col.astype(np.int64))


def norm_adjacency(users, items, n_users, n_items):
    """D^-1/2 A D^-1/2 of the bipartite user-item graph, (n_users + n_items)^2, sparse COO (items offset by
    n_users)."""
    values = sym_norm(users, items, n_users, n_items, offset=DEGREE_OFFSET)
    rows = torch.cat([users, items + n_users])
    cols = torch.cat([items + n_users, users])
    n = n_users + n_items
    return torch.sparse_coo_tensor(torch.stack([rows, cols]), torch.cat([values, values]), (n, n),
                                   check_invariants=False).coalesce()


def knn_neighbours(features, k, block_size=2048):
    """Indices [n, k] of each row's k most cosine-similar rows (itself included, as in FREEDOM)."""
    normed = features / features.norm(dim=1, keepdim=True).clamp_min(1e-12)
    blocks = [torch.topk(normed[s:s + block_size] @ normed.T, k, dim=1).indices
              for s in range(0, len(normed), block_size)]
    return torch.cat(blocks)


def knn_graph(features, k):
    """The symmetrically normalised kNN graph of ``features`` as a sparse [n, n] matrix (every row has k
    neighbours, so each entry is 1/k, as FREEDOM's ``get_knn_adj_mat``)."""
    n = features.shape[0]
    rows = torch.arange(n, device=features.device).repeat_interleave(k)
    cols = knn_neighbours(features, k).reshape(-1)
    return torch.sparse_coo_tensor(torch.stack([rows, cols]), sym_norm(rows, cols, n), (n, n),
                                   check_invariants=False).coalesce()


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


def shrunk_knn(features, k, shrink, block_size=2048):
    """ItemKNNCBF's item-item graph (Dacrema et al., RecSys 2019; MMRec's ``ItemKNNCBF``): ``s_ij = f_i . f_j /
    (|f_i| |f_j| + shrink)``, each row keeping its ``k`` largest (itself included), as a scipy CSR [n, n] (float32).
    Built in row blocks, so memory stays O(n k) where MMRec's builds the dense n x n matrix."""
    n = features.shape[0]
    k = min(k, n)
    norms = features.norm(dim=1)
    values, columns = [], []
    for start in range(0, n, block_size):
        block = features[start:start + block_size]
        similarity = (block @ features.T) / (norms[start:start + block_size, None] * norms[None, :] + shrink)
        top = similarity.topk(k, dim=1)
        order = top.indices.argsort(dim=1)  # columns sorted within each row (canonical CSR)
        columns.append(top.indices.gather(1, order))
        values.append(top.values.gather(1, order))
    indptr = np.arange(n + 1, dtype=np.int64) * k
    return sp.csr_matrix((torch.cat(values).reshape(-1).cpu().numpy().astype(np.float32),
                          torch.cat(columns).reshape(-1).cpu().numpy(), indptr), shape=(n, n))


def weighted_knn(features, k, block_size=2048):
    """LATTICE's kNN graph: each row's ``k`` most cosine-similar rows (itself included) with their similarity as
    the edge value. Returns ``(indices [2, n k], values [n k])``; the values are differentiable in ``features``
    (the neighbours are chosen without gradient)."""
    normed = features / features.norm(dim=1, keepdim=True).clamp_min(1e-12)
    with torch.no_grad():
        neighbours = knn_neighbours(normed, k, block_size)
    n = features.shape[0]
    rows = torch.arange(n, device=features.device).repeat_interleave(k)
    cols = neighbours.reshape(-1)
    values = (normed[rows] * normed[cols]).sum(-1)
    return torch.stack([rows, cols]), values


def agreeing_knn_graphs(features, k, block_size=2048):
    """DA-MRS's item-item graphs, one per modality of ``features`` ({modality: [n, F]}): the cosine similarities of
    every modality are kept where each is at least its own mean over all pairs (a pair that is dissimilar in one
    modality is no neighbour in any), each row keeps its ``k`` most similar of those (fewer where fewer are kept;
    itself included), with value 1, then D^-1/2 A D^-1/2 with D the row sums + 1e-7 (MMRec's
    ``get_knn_adj_mat`` and ``compute_normalized_laplacian``). Built in row blocks: O(n k) memory where MMRec
    builds every dense n x n matrix. The mean of all pairs' similarities is ``|sum of the normalised rows|^2 / n^2``.
    Returns ``{modality: CSR [n, n]}``."""
    names = list(features)
    normed = {m: features[m] / features[m].norm(dim=1, keepdim=True).clamp_min(1e-12) for m in names}
    n = normed[names[0]].shape[0]
    means = {m: normed[m].sum(0).pow(2).sum() / n ** 2 for m in names}
    rows, cols = {m: [] for m in names}, {m: [] for m in names}
    take = min(k, n)
    with torch.no_grad():
        for start in range(0, n, block_size):
            similarity = {m: normed[m][start:start + block_size] @ normed[m].T for m in names}
            kept = torch.stack([similarity[m] >= means[m] for m in names]).all(0)
            count = kept.sum(1, keepdim=True)
            for m in names:
                top = torch.where(kept, similarity[m], -torch.inf).topk(take, dim=1).indices
                valid = torch.arange(take, device=top.device) < count
                rows[m].append((torch.arange(len(top), device=top.device)[:, None] + start).expand_as(top)[valid])
                cols[m].append(top[valid])
    graphs = {}
    for m in names:
        r, c = torch.cat(rows[m]), torch.cat(cols[m])
        graphs[m] = torch.sparse_coo_tensor(torch.stack([r, c]), sym_norm(r, c, n, offset=DEGREE_OFFSET), (n, n),
                                            check_invariants=False).coalesce().to_sparse_csr()
    return graphs


def item_behaviour_graph(users, items, n_users, n_items, k):
    """DA-MRS's behaviour ("session") item graph: each item's ``k`` items with the most users in common, weighted by
    that count (``user_cooccurrence_graph`` on the transposed interactions), plus the item itself with weight 1,
    then D^-1/2 A D^-1/2 with D the row sums + 1e-7, as a CSR [n_items, n_items]. (The authors load it from an
    ``item_graph_dict`` file that MMRec does not generate; this is DualGNN's construction for items.)"""
    indptr, neighbours, counts = user_cooccurrence_graph(items, users, n_items, n_users, k)
    own = np.arange(n_items)
    rows = torch.from_numpy(np.concatenate([own, np.repeat(own, np.diff(indptr))]))
    cols = torch.from_numpy(np.concatenate([own, neighbours]))
    values = torch.from_numpy(np.concatenate([np.ones(n_items, dtype=np.float32), counts]))
    return torch.sparse_coo_tensor(torch.stack([rows, cols]), sym_norm(rows, cols, n_items, values=values,
                                                                       offset=DEGREE_OFFSET),
                                   (n_items, n_items), check_invariants=False).coalesce().to_sparse_csr()


def user_item_block(users, items, n_users, n_items):
    """The user-item block R of the normalised training graph D^-1/2 [[0, R], [R^T, 0]] D^-1/2 as a CSR
    [n_users, n_items] (MGCN's and SMORE's ``R``: users aggregate their items with the graph's weights)."""
    values = sym_norm(users, items, n_users, n_items, offset=DEGREE_OFFSET)
    block = torch.sparse_coo_tensor(torch.stack([users, items]), values, (n_users, n_items))
    return block.coalesce().to_sparse_csr()


def similarity_knn_graph(features, k):
    """MMRec's ``build_knn_normalized_graph(build_sim(features), k, norm_type='sym')`` (MGCN, SMORE): each row's
    ``k`` most cosine-similar rows (itself included) weighted by the similarity, then D^-1/2 S D^-1/2 with D the
    row sums; a constant CSR [n, n], built in blocks."""
    with torch.no_grad():
        return normalized_sum([(1.0, *weighted_knn(features, k))], features.shape[0]).to_sparse_csr()


def normalized_sum(graphs, n):
    """sum_g w_g S_g of weighted graphs ``[(weight, indices, values)]``, then D^-1/2 (.) D^-1/2 with D the row
    sums (LATTICE's ``compute_normalized_laplacian``), as one sparse COO matrix whose values keep their gradient."""
    indices = torch.cat([i for _, i, _ in graphs], 1)
    values = torch.cat([w * v for w, _, v in graphs])
    return torch.sparse_coo_tensor(indices, sym_norm(indices[0], indices[1], n, values=values), (n, n),
                                   check_invariants=False).coalesce()


def csr_transpose(adjacency):
    return adjacency.to_sparse_coo().t().coalesce().to_sparse_csr()


def mean_adjacency(edge_index, n_nodes):
    """[n, n] CSR matrix with 1/deg(i) at (i, j) for every edge j -> i: ``A @ x`` = mean of the neighbours.

    A node without edges gets a zero row (as PyG's mean aggregation gives it).
    """
    source, target = edge_index
    deg = torch.zeros(n_nodes, device=edge_index.device).index_add_(0, target, torch.ones(len(target),
                                                                                            device=edge_index.device))
    values = 1.0 / deg[target]
    return torch.sparse_coo_tensor(torch.stack([target, source]), values, (n_nodes, n_nodes)).coalesce().to_sparse_csr()


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


def valid_user_graph(arrays, n_users):
    """``user_cooccurrence_graph``'s CSR arrays, well-formed for ``n_users`` users."""
    try:
        indptr, neighbours, counts = arrays["indptr"], arrays["neighbours"], arrays["counts"]
    except KeyError:
        return False
    return (indptr.ndim == neighbours.ndim == counts.ndim == 1 and len(indptr) == n_users + 1 and indptr[0] == 0
            and bool(np.all(np.diff(indptr) >= 0)) and indptr[-1] == len(neighbours) == len(counts)
            and bool(np.all((neighbours >= 0) & (neighbours < n_users))) and bool(np.all(np.isfinite(counts))))


def sampled_user_graph(indptr, neighbours, counts, k, generator=None):
    """DualGNN's / DRAGON's per-epoch user graph: each user's first ``k`` neighbours, weighted by the softmax of
    their counts, as an [n_users, n_users] CSR matrix. A user with fewer than ``k`` (but some) neighbours gets
    random repeats of them up to ``k`` (repeats add to a neighbour's weight, as in the authors' code, which
    draws them from the growing list; here from the original one); a user without any gets an empty row.
    The arrays may be NumPy arrays or tensors; the graph is sampled where the tensors are (a model's device)."""
    device = indptr.device if torch.is_tensor(indptr) else torch.device("cpu")
    indptr, neighbours, counts = (torch.as_tensor(a, device=device) for a in (indptr, neighbours, counts))
    n_users = len(indptr) - 1
    degree = indptr.diff()
    kept = degree.clamp(max=k)
    users = torch.arange(n_users, device=device)
    rows = users.repeat_interleave(kept)
    position = torch.arange(len(rows), device=device) - torch.cumsum(kept, 0).sub(kept).repeat_interleave(kept)
    short = (degree > 0) & (degree < k)
    extra_rows = users[short].repeat_interleave(k - degree[short])
    extra_position = (torch.rand(len(extra_rows), generator=generator, device=device) * degree[extra_rows]).long()
    rows, position = torch.cat([rows, extra_rows]), torch.cat([position, extra_position])
    entry = indptr[:-1][rows] + position
    cols, values = neighbours[entry], counts[entry]
    row_max = torch.full((n_users,), -float("inf"), device=device, dtype=values.dtype).scatter_reduce(
        0, rows, values, "amax")
    weights = (values - row_max[rows]).exp()
    weights = weights / torch.zeros(n_users, device=device, dtype=weights.dtype).index_add_(0, rows, weights)[rows]
    return torch.sparse_coo_tensor(torch.stack([rows, cols]), weights, (n_users, n_users),
                                   check_invariants=False).coalesce().to_sparse_csr()


def cached_graph(config, name, key, compute, valid):
    """``compute()`` (a dict of numpy arrays), cached beside the plugin's build of the dataset of ``config``.

    The file is ``<build>/graphs/<name>-<sha256 of key>.npz``: ``key`` holds everything the graph depends on
    (the split's interactions, the sizes and settings), so another split or setting is another file, and a
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
