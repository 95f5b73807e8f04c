"""Training data under attack: fake users who promote target items (data poisoning, "shilling"), contaminated
and thinned feedback, and detectors that remove suspected fake users before training.

Everything here changes the **training split only**, after RecBole has split the data, so validation and
test hold the same real users and interactions as a clean run of the same seed, and any model (RecBole's
or the plugin's) trains on the result unchanged. ``use_poisoned_split(config, dataset)`` gives the run's
dataset a ``build`` that does, in this order:

1. **targets** (``poison_targets``): a count of items drawn with the seed among the training items in the
   less popular half (``poison_target_pool: unpopular``; ``all``: any training item), or item tokens (a
   list, or a file with one token per line). Drawn from the clean training split, so a clean run and a
   poisoned run of one seed have the same targets.
2. **thinned feedback** (``feedback_drop``: each user loses that share of the training interactions, at
   least one kept; RGRecSys' sparsity transform) and **contaminated feedback** (``feedback_noise``: that
   share of the training interactions is replaced by, with ``feedback_noise_mode: flip``, or joined by,
   with ``add``, a random item the user never interacted with: careless clicks, the ACAE paper's "careless
   preference selection", section 1; the paper gives no rate, so ``feedback_noise`` has no default).
3. **fake users** (``poison``): ``poison_users`` fake users (a count, or a share of the real training
   users), each with every target and ``poison_filler`` other items (default: the mean training profile
   length). The profiles (Lam and Riedl 2004; Mobasher et al. 2007; RecAD's heuristic attackers):

   * ``random``: filler drawn uniformly among the training items;
   * ``average``: filler drawn in proportion to item popularity, so a profile looks like an average
     user's (on implicit data "average" cannot mean the item's mean rating; with a rating column the
     filler gets the item's mean rating, as RecAD's average attack);
   * ``bandwagon``: ``poison_selected`` of the most popular items, the rest random;
   * ``segment``: the ``poison_selected`` items most often liked together with the targets (the target's
     segment), the rest random;
   * ``pga``: projected gradient ascent (Li et al., NeurIPS 2016, "Data poisoning attacks on
     factorization-based collaborative filtering") on relaxed profiles in [0, 1]: the attacker's utility is
     the real users' mean log-sigmoid margin of each target over their K-th best item (K = 10), under a
     matrix-factorisation surrogate whose item factors are one alternating-least-squares update on the
     real and fake rows (the paper's alternating-minimisation formulation; autograd differentiates the
     update instead of the paper's closed-form derivatives). Starts from a random attack, ``poison_steps``
     steps, then each profile keeps the targets and its ``poison_filler`` highest-valued items.

   With a rating column, targets and selected items get the highest training rating and fillers a
   Gaussian draw around the global (``random``, ``bandwagon``, ``segment``) or item (``average``) mean,
   rounded and clipped to the training ratings' range, as RecAD does.

   The fake users are written once as a RecBole atomic file, ``<build_dir>/poison/<dataset>/<attack>-<key>/
   <dataset>.fake.inter`` (with ``targets.txt`` and ``poison.json``), where ``key`` hashes the training
   split and every setting they depend on: a later run with the same settings reads them back; the
   source data is never written to.
4. **detection** (``poison_detector``): ``pca`` (PCA-VarSelect, Mehta and Nejdl 2009, as RecAD's
   ``PCASelectUsers``: users are the variables of a PCA of the z-scored user profiles; those with the
   smallest loadings on the first 3 components are flagged) or ``stats`` (profile statistics after
   Chirita et al. 2005: the mean log popularity of the profile's items and the degree of similarity with
   the 10 nearest users (DegSim); the sum of their absolute z-scores ranks the users). The
   ``poison_detect_users`` highest-ranked users (default: as many as were injected, the known-budget
   evaluation RecAD uses) lose their training interactions; precision and recall against the injected
   users are recorded.

What was done is kept on the training split as ``train.poisoning`` (``Poisoning``), which the
``poisoning`` analysis (``robustness/analyses/poisoning.py``) reads.
"""
import hashlib
import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from logging import getLogger

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch
from recbole.data.interaction import Interaction, cat_interactions

from recbole_robust.data import prepare
from recbole_robust.errors import RecBoleRobustError
from recbole_robust.settings import as_list, is_int, is_number, positive_int

ATTACKS = ("random", "average", "bandwagon", "segment", "pga")
DETECTORS = ("pca", "stats")
POISON_VERSION = 1
"""Bumped whenever generated profiles change, so cached fake users are redone."""
FAKE_PREFIX = "fake-user-"
PGA_TOPK, PGA_DIM, PGA_REG = 10, 32, 1.0
DETECT_COMPONENTS, DEGSIM_NEIGHBOURS = 3, 10


def count_or_share(v):
    return is_int(v) and v >= 1 or is_number(v) and not is_int(v) and 0 < v < 1


def _targets_ok(v):
    if is_int(v):
        return v >= 1
    if isinstance(v, str):
        return bool(v)
    return isinstance(v, list) and bool(v) and all(isinstance(t, (str, int)) and not isinstance(t, bool) for t in v)


SHARE = (lambda v: is_number(v) and 0 <= v < 1, "a share in [0, 1)")
SETTINGS = {
    "poison": (lambda v: v is None or v in ATTACKS, f"one of {', '.join(ATTACKS)} (or ~)"),
    "poison_users": (count_or_share, "a count >= 1 or a share in (0, 1) of the real training users"),
    "poison_filler": (lambda v: v is None or positive_int(v), "an integer >= 1 (or ~: the mean profile length)"),
    "poison_selected": (lambda v: v is None or is_int(v) and v >= 0, "an integer >= 0 (or ~: a tenth of the filler)"),
    "poison_targets": (_targets_ok, "a count >= 1, a list of item tokens or a file of item tokens"),
    "poison_target_pool": (lambda v: v in ("unpopular", "all"), "unpopular or all"),
    "poison_steps": (positive_int, "an integer >= 1"),
    "poison_seed": (lambda v: v is None or is_int(v), "an integer (or ~: the run's seed)"),
    "poison_detector": (lambda v: v is None or v in DETECTORS, f"one of {', '.join(DETECTORS)} (or ~)"),
    "poison_detect_users": (lambda v: v is None or count_or_share(v),
                            "a count >= 1 or a share in (0, 1) of the training users (or ~: as many as injected)"),
    "feedback_noise": (lambda v: v is None or is_number(v) and 0 <= v < 1, "a share in [0, 1) (or ~)"),
    "feedback_noise_mode": (lambda v: v in ("flip", "add"), "flip or add"),
    "feedback_drop": (lambda v: v is None or is_number(v) and 0 <= v < 1, "a share in [0, 1) (or ~)"),
}


@dataclass
class Poisoning:
    """What was done to a training split (``train.poisoning``)."""

    attack: str = None
    targets: np.ndarray = None          # item ids (RecBole's)
    target_tokens: list = None
    real_users: int = 0                 # user ids below it are real (0 is RecBole's padding)
    eligible: np.ndarray = None         # [real_users, targets]: the user never interacted with the target (clean data)
    fake_users: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    filler: int = 0
    selected: int = 0
    detector: str = None
    removed: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    changes: dict = field(default_factory=dict)  # counts: dropped, flipped, added, fake interactions
    folder: str = None                  # the fake users' atomic-file build
    seconds: float = 0.0                # time to generate the fake users (0: read from the cache)

    def detection(self):
        """``(precision, recall)`` of the removed users against the injected ones (None without a detector)."""
        if self.detector is None:
            return None, None
        hit = np.isin(self.removed, self.fake_users).sum()
        precision = hit / len(self.removed) if len(self.removed) else 0.0
        recall = hit / len(self.fake_users) if len(self.fake_users) else float("nan")
        return float(precision), float(recall)


def wanted(config):
    """Whether the run's training split is changed or its targets are measured."""
    return bool(config["poison"] or config["poison_detector"] or config["feedback_noise"] or config["feedback_drop"]
                or "poisoning" in as_list(config["analysis"] or []))


def check_poison_options(config):
    """Cross-field rules, before any data is read."""
    if not wanted(config):
        return
    if config["heldout_users"]:
        raise RecBoleRobustError("poisoning and noisy feedback change the training split; heldout_users "
                                 "(strong generalisation) builds its own and cannot be combined with them")
    if config["poison_detector"] and not config["poison"] and config["poison_detect_users"] is None:
        raise RecBoleRobustError("poison_detector without poison needs poison_detect_users (how many users to "
                                 "remove): there is no injected count to default to")
    targets = config["poison_targets"]
    if isinstance(targets, str) and not os.path.isfile(targets):
        raise RecBoleRobustError(f"poison_targets {targets}: no such file (a count, a list of item tokens, or a file "
                                 "with one item token per line)")
    build_dir = os.path.abspath(config["build_dir"])
    data_path = os.path.abspath(config["data_path"])
    if not config["plugin_build"] and prepare._inside(build_dir, data_path):
        raise RecBoleRobustError(f"build_dir {config['build_dir']} lies in the data folder {config['data_path']}: "
                                 "fake users are written outside the source data (choose another --build_dir)")


def _count(value, total):
    return int(value) if is_int(value) else max(1, int(round(value * total)))


def _read_target_file(path):
    try:
        with open(path, encoding="utf-8") as f:
            tokens = [line.strip() for line in f if line.strip()]
    except (OSError, UnicodeDecodeError) as e:
        raise RecBoleRobustError(f"poison_targets {path} cannot be read as text: {e}") from None
    if not tokens:
        raise RecBoleRobustError(f"poison_targets {path} holds no item token")
    return tokens


def choose_targets(config, dataset, csr, seed):
    """Target item ids (sorted): drawn (``poison_targets`` a count) or named (tokens)."""
    value = config["poison_targets"]
    popularity = np.asarray(csr.sum(0)).ravel()
    trained = np.flatnonzero(popularity > 0)
    trained = trained[trained > 0]
    if is_int(value):
        pool = trained
        if config["poison_target_pool"] == "unpopular":
            pool = trained[popularity[trained] <= np.median(popularity[trained])]
        if value > len(pool):
            raise RecBoleRobustError(f"poison_targets {value} is more than the {len(pool)} items of the target pool "
                                     f"({config['poison_target_pool']} items of the training split)")
        return np.sort(np.random.default_rng(seed).choice(pool, value, replace=False))
    tokens = _read_target_file(value) if isinstance(value, str) else [str(t) for t in value]
    ids = dataset.field2token_id[dataset.iid_field]
    unknown = [t for t in tokens if t not in ids]
    if unknown:
        raise RecBoleRobustError(f"poison_targets: item {unknown[0]!r} is not an item of dataset '{config['dataset']}'")
    if len(set(tokens)) != len(tokens):
        raise RecBoleRobustError("poison_targets names an item twice")
    return np.sort(np.array([ids[t] for t in tokens], dtype=np.int64))


def _user_positions(users, rng):
    """A random order of the interactions grouped by user, and each one's position within its user's group."""
    order = rng.permutation(len(users))
    order = order[np.argsort(users[order], kind="stable")]
    counts = np.bincount(users, minlength=int(users.max()) + 1 if len(users) else 0)
    starts = np.cumsum(counts) - counts
    return order, np.arange(len(order)) - starts[users[order]], counts


def _random_new_items(users, n_items, taken, rng):
    """For each user of ``users``, an item id in [1, n_items) it has not got (``taken``: a set of user * n + item)."""
    out = np.empty(len(users), dtype=np.int64)
    for k, u in enumerate(users):
        while True:
            item = int(rng.integers(1, n_items))
            key = int(u) * n_items + item
            if key not in taken:
                taken.add(key)
                out[k] = item
                break
    return out


def thin_and_contaminate(config, frame, uid, iid, n_items, rng):
    """``feedback_drop`` then ``feedback_noise`` on the interaction columns ``frame`` (a dict of numpy arrays)."""
    changes = {}
    drop = config["feedback_drop"]
    if drop:
        users = frame[uid]
        order, position, counts = _user_positions(users, rng)
        n_drop = np.minimum(np.floor(drop * counts).astype(np.int64), np.maximum(counts - 1, 0))
        dropped = order[position < n_drop[users[order]]]
        keep = np.ones(len(users), dtype=bool)
        keep[dropped] = False
        frame = {k: v[keep] for k, v in frame.items()}
        changes["dropped"] = int((~keep).sum())
    noise = config["feedback_noise"]
    if noise:
        users, items = frame[uid], frame[iid]
        taken = set((users * n_items + items).tolist())
        n_noisy = int(round(noise * len(users)))
        chosen = rng.choice(len(users), n_noisy, replace=False)
        new_items = _random_new_items(users[chosen], n_items, taken, rng)
        if config["feedback_noise_mode"] == "flip":
            frame[iid] = items.copy()
            frame[iid][chosen] = new_items
            changes["flipped"] = n_noisy
        else:
            added = {k: v[chosen] for k, v in frame.items()}
            added[iid] = new_items
            frame = {k: np.concatenate([v, added[k]]) for k, v in frame.items()}
            changes["added"] = n_noisy
    return frame, changes


# ----------------------------------------------------------------------------------------------------------- attacks

def _draw(pool, size, rng, p=None):
    size = min(size, len(pool))
    return rng.choice(pool, size, replace=False, p=p) if size else np.zeros(0, dtype=np.int64)


def _segment_items(csr, targets, popularity):
    """Items ranked by how many users liked them together with a target (ties: by popularity)."""
    fans = np.flatnonzero(np.asarray(csr[:, targets].sum(1)).ravel() > 0)
    together = np.asarray(csr[fans].sum(0)).ravel() if len(fans) else np.zeros(csr.shape[1])
    return np.lexsort((-popularity, -together))


def heuristic_profiles(attack, csr, targets, n_fake, filler, selected, rng):
    """``[n_fake lists of item ids]``: every target plus ``filler`` other items (see the module docstring)."""
    popularity = np.asarray(csr.sum(0)).ravel().astype(np.float64)
    candidates = np.flatnonzero(popularity > 0)
    candidates = candidates[(candidates > 0) & ~np.isin(candidates, targets)]
    chosen = np.zeros(0, dtype=np.int64)
    if attack == "bandwagon":
        chosen = candidates[np.argsort(-popularity[candidates], kind="stable")][:selected]
    elif attack == "segment":
        ranked = _segment_items(csr, targets, popularity)
        chosen = ranked[np.isin(ranked, candidates)][:selected]
    rest = candidates[~np.isin(candidates, chosen)]
    weights = popularity[rest] / popularity[rest].sum() if attack == "average" else None
    return [np.concatenate([targets, chosen, _draw(rest, filler - len(chosen), rng, weights)]).astype(np.int64)
            for _ in range(n_fake)]


class Surrogate:
    """The PGA attacker's model of the victim (module docstring): item factors from a truncated SVD of the real
    users' profiles, user factors by ridge regression on them, and ``utility(z)``: the real users' mean log-sigmoid
    margin of each target over their K-th best item after one ALS update of the item factors on real and fake
    (``z``, fake users x items, relaxed to [0, 1]) profiles."""

    def __init__(self, csr, targets, seed):
        self.real = torch.from_numpy(csr.toarray().astype(np.float32))
        n_users, n_items = self.real.shape
        self.dim = max(1, min(PGA_DIM, n_users - 1, n_items - 1))
        with torch.random.fork_rng():  # the run's generators are left as they were (a cached run draws nothing)
            torch.manual_seed(seed)
            _, _, item_factors = torch.svd_lowrank(self.real, q=self.dim, niter=4)
        ridge = torch.linalg.inv(item_factors.T @ item_factors + PGA_REG * torch.eye(self.dim))
        self.projection = item_factors @ ridge                     # profile -> user factors
        self.user_factors = self.real @ self.projection
        self.gram, self.cross = self.user_factors.T @ self.user_factors, self.user_factors.T @ self.real
        self.targets = torch.from_numpy(np.asarray(targets))
        self.eligible = self.real[:, self.targets] == 0
        self.eligible[0] = False
        self.trained = self.real > 0
        self.trained[:, 0] = True

    def utility(self, z):
        fake_factors = z @ self.projection
        a = self.gram + fake_factors.T @ fake_factors + PGA_REG * torch.eye(self.dim)
        scores = self.user_factors @ torch.linalg.solve(a, self.cross + fake_factors.T @ z)  # real users x items
        with torch.no_grad():
            masked = scores.masked_fill(self.trained, -torch.inf)
            threshold = masked.topk(min(PGA_TOPK, scores.shape[1] - 1), dim=1).values[:, -1:]
        margin = torch.nn.functional.logsigmoid(scores[:, self.targets] - threshold)
        return margin[self.eligible].mean()


def profile_matrix(profiles, n_items):
    z = torch.zeros(len(profiles), n_items)
    for row, items in enumerate(profiles):
        z[row, torch.from_numpy(np.asarray(items))] = 1.0
    return z


def capped_simplex(y, total, iterations=50):
    """Euclidean projection of each row of ``y`` onto ``{z in [0, 1]^n : sum(z) = total}`` (``clip(y - tau, 0, 1)``,
    ``tau`` found by bisection; ``-inf`` entries stay 0)."""
    finite = y.masked_fill(torch.isinf(y), 0.0)
    low = finite.min(dim=1, keepdim=True).values - 1.0
    high = finite.max(dim=1, keepdim=True).values
    for _ in range(iterations):
        tau = (low + high) / 2
        over = (y - tau).clamp(0, 1).sum(dim=1, keepdim=True) > total
        low, high = torch.where(over, tau, low), torch.where(over, high, tau)
    return (y - (low + high) / 2).clamp(0, 1)


def pga_profiles(csr, targets, n_fake, filler, steps, rng):
    """PGA (Li et al. 2016) against a ``Surrogate``: lists of item ids (module docstring)."""
    surrogate = Surrogate(csr, targets, int(rng.integers(2 ** 31)))
    z = profile_matrix(heuristic_profiles("random", csr, targets, n_fake, filler, 0, rng), csr.shape[1])
    target_columns = torch.from_numpy(targets)
    for _ in range(steps):
        z.requires_grad_(True)
        (grad,) = torch.autograd.grad(surrogate.utility(z), z)
        with torch.no_grad():  # a step, then the projection onto the budget: the targets rated, no padding item
            y = z + 0.5 * grad / grad.abs().max().clamp_min(1e-12)
            y[:, target_columns] = -torch.inf
            y[:, 0] = -torch.inf
            z = capped_simplex(y, filler)
            z[:, target_columns] = 1.0
    z[:, target_columns] = -1.0  # the filler: the highest-valued other items
    order = torch.argsort(-z.detach(), dim=1, stable=True).numpy()
    popular = np.asarray(csr.sum(0)).ravel() > 0
    return [np.concatenate([targets, row[popular[row] & ~np.isin(row, targets) & (row > 0)][:filler]]).astype(np.int64)
            for row in order]


def fake_ratings(attack, profiles, targets, selected_count, ratings_of, rng):
    """Ratings of the fake interactions (``ratings_of``: ``(items, ratings)`` of the training split)."""
    items, values = ratings_of
    low, high = float(values.min()), float(values.max())
    step = np.diff(np.unique(values)).min() if len(np.unique(values)) > 1 else 1.0
    sums = np.bincount(items, weights=values)
    counts = np.bincount(items)
    means = np.divide(sums, counts, out=np.full(len(sums), values.mean()), where=counts > 0)
    out = []
    for profile in profiles:
        r = np.empty(len(profile))
        head = len(targets) + selected_count
        r[:head] = high
        filler = profile[head:]
        centre = means[np.minimum(filler, len(means) - 1)] if attack == "average" else values.mean()
        draw = rng.normal(centre, values.std(), size=len(filler))
        r[head:] = np.clip(low + np.round((draw - low) / step) * step, low, high)
        out.append(r)
    return out


# ----------------------------------------------------------------------------------------------------------- detectors

def _scores_pca(csr):
    """PCA-VarSelect: users (the variables) with the smallest squared loadings on the first components."""
    from scipy.sparse.linalg import LinearOperator, svds

    x = csr.astype(np.float64)
    n_users, n_items = x.shape
    mean = np.asarray(x.mean(1)).ravel()
    sq = np.asarray(x.multiply(x).mean(1)).ravel()
    std = np.sqrt(np.maximum(sq - mean ** 2, 0))
    std[std == 0] = 1.0

    def matvec(v):
        v = np.asarray(v).ravel()
        return (x @ v - mean * v.sum()) / std

    def rmatvec(u):
        u = np.asarray(u).ravel() / std
        return x.T @ u - np.full(n_items, (mean * u).sum())

    operator = LinearOperator((n_users, n_items), matvec=matvec, rmatvec=rmatvec, dtype=np.float64)
    k = max(1, min(DETECT_COMPONENTS, min(n_users, n_items) - 1))
    vectors, _, _ = svds(operator, k=k, random_state=0, solver="arpack")
    return -(vectors ** 2).sum(1)   # higher: more suspicious


def _scores_stats(csr):
    """|z| of the mean log popularity of a profile's items + |z| of DegSim (mean cosine similarity to the nearest
    users). Profile size is left out: an attacker sets it to the mean (``poison_filler``'s default)."""
    x = (csr > 0).astype(np.float64).tocsr()
    size = np.asarray(x.sum(1)).ravel()
    popularity = np.log1p(np.asarray(x.sum(0)).ravel())
    mean_pop = np.divide(x @ popularity, size, out=np.zeros(len(size)), where=size > 0)
    norms = np.sqrt(np.maximum(size, 1))
    degsim = np.zeros(x.shape[0])
    k = min(DEGSIM_NEIGHBOURS, x.shape[0] - 1)
    for start in range(0, x.shape[0], 1024):
        block = (x[start:start + 1024] @ x.T).toarray() / norms[start:start + 1024, None] / norms[None, :]
        block[np.arange(len(block)), np.arange(start, start + len(block))] = -np.inf
        if k > 0:
            degsim[start:start + len(block)] = np.sort(block, axis=1)[:, -k:].mean(1)

    def z(v):
        return (v - v.mean()) / (v.std() or 1.0)

    return np.abs(z(mean_pop)) + np.abs(z(degsim))


def detect(detector, csr, count):
    """The ``count`` user ids (rows of ``csr`` with interactions) that ``detector`` finds most suspicious."""
    active = np.flatnonzero(np.asarray(csr.sum(1)).ravel() > 0)
    scores = (_scores_pca if detector == "pca" else _scores_stats)(csr[active])
    return np.sort(active[np.argsort(-scores, kind="stable")[:min(count, len(active))]])


# ----------------------------------------------------------------------------------------------------------- cache

def _digest(parts):
    h = hashlib.sha256()
    for part in parts:
        h.update(np.ascontiguousarray(part).tobytes() if isinstance(part, np.ndarray) else repr(part).encode())
    return h.hexdigest()[:16]


def fake_folder(config, attack, key):
    return os.path.join(os.path.abspath(config["build_dir"]), "poison", config["dataset"], f"{attack}-{key}")


def _write_fakes(folder, name, tokens, item_tokens, profiles, ratings, info):
    """The fake users as a RecBole atomic file, in a folder of the builder's own, written atomically."""
    parent = os.path.dirname(folder)
    prepare._makedirs(parent)
    tmp = tempfile.mkdtemp(prefix=".poison-", dir=parent)
    try:
        open(os.path.join(tmp, prepare.BUILD_MARKER), "w").close()
        frame = {"user_id:token": np.repeat(tokens, [len(p) for p in profiles]),
                 "item_id:token": item_tokens[np.concatenate(profiles)]}
        if ratings is not None:
            frame["rating:float"] = np.concatenate(ratings)
        pd.DataFrame(frame).to_csv(os.path.join(tmp, f"{name}.fake.inter"), sep="\t", index=False,
                                   lineterminator="\n")
        with open(os.path.join(tmp, "targets.txt"), "w", encoding="utf-8") as f:
            f.write("\n".join(info["targets"]) + "\n")
        with open(os.path.join(tmp, "poison.json"), "w", encoding="utf-8") as f:
            json.dump(info, f, indent=1)
        try:
            os.rename(tmp, folder)
            prepare._created.append(folder)
        except OSError:
            if not os.path.isdir(folder):  # not another process's finished copy
                raise
    finally:
        if os.path.isdir(tmp):
            shutil.rmtree(tmp, ignore_errors=True)


def _read_fakes(folder, name, user_tokens_expected, item_ids):
    """Profiles (and ratings) of a cached build, or None when it is missing or does not match."""
    path = os.path.join(folder, f"{name}.fake.inter")
    if not (prepare.is_own_folder(folder) and os.path.isfile(path)):
        return None
    try:
        frame = pd.read_csv(path, sep="\t", dtype={"user_id:token": str, "item_id:token": str})
        users, items = frame["user_id:token"].to_numpy(), frame["item_id:token"].map(item_ids)
    except (OSError, ValueError, KeyError):
        return None
    if items.isna().any() or list(dict.fromkeys(users)) != list(user_tokens_expected):
        return None
    items = items.to_numpy(dtype=np.int64)
    bounds = np.flatnonzero(np.r_[True, users[1:] != users[:-1], True])
    profiles = [items[a:b] for a, b in zip(bounds[:-1], bounds[1:])]
    ratings = None
    if "rating:float" in frame.columns:
        values = frame["rating:float"].to_numpy(dtype=np.float64)
        ratings = [values[a:b] for a, b in zip(bounds[:-1], bounds[1:])]
    return profiles, ratings


# ----------------------------------------------------------------------------------------------------------- the split

def _columns(interaction):
    return {k: interaction[k].numpy() for k in interaction.columns}


def poison_split(config, dataset, train):
    """The training split ``train`` with the run's targets, noise, fake users and detection (module docstring)."""
    logger = getLogger()
    uid, iid = dataset.uid_field, dataset.iid_field
    seed = config["poison_seed"] if config["poison_seed"] is not None else config["seed"]
    rng = np.random.default_rng(seed)
    clean_csr = train.inter_matrix(form="csr").astype(np.float32)
    n_users, n_items = dataset.user_num, dataset.item_num
    info = Poisoning(attack=config["poison"], real_users=n_users, detector=config["poison_detector"])
    measured = config["poison"] or "poisoning" in as_list(config["analysis"] or [])
    info.targets = choose_targets(config, dataset, clean_csr, seed) if measured else np.zeros(0, dtype=np.int64)
    info.target_tokens = [str(t) for t in dataset.field2id_token[iid][info.targets]]
    frame = _columns(train.inter_feat)
    frame, info.changes = thin_and_contaminate(config, frame, uid, iid, n_items, rng)
    csr = sp.csr_matrix((np.ones(len(frame[uid]), dtype=np.float32), (frame[uid], frame[iid])),
                        shape=(n_users, n_items))
    csr.data[:] = 1.0  # duplicates were summed when the matrix was built: binary again
    info.eligible = (clean_csr[:, info.targets].toarray() == 0)
    info.eligible[0] = False
    rating = config["RATING_FIELD"] if config["RATING_FIELD"] in frame else None
    if config["poison"]:
        real_count = int((np.asarray(csr.sum(1)).ravel() > 0).sum())
        n_fake = _count(config["poison_users"], real_count)
        mean_length = int(round(csr.nnz / max(real_count, 1)))
        info.filler = config["poison_filler"] or max(1, mean_length)
        info.selected = min(info.filler, config["poison_selected"] if config["poison_selected"] is not None
                            else max(1, info.filler // 10)) if config["poison"] in ("bandwagon", "segment") else 0
        fake_tokens = np.array([f"{FAKE_PREFIX}{k}" for k in range(n_fake)])
        clash = [t for t in fake_tokens if t in dataset.field2token_id[uid]]
        if clash:
            raise RecBoleRobustError(f"dataset '{config['dataset']}' has a user named {clash[0]!r}, the name of a "
                                     "fake user")
        settings = {k: config[k] for k in ("poison", "poison_steps")}
        key = _digest([POISON_VERSION, config["dataset"], csr.indptr, csr.indices, info.targets, n_fake, info.filler,
                       info.selected, settings, seed, rating is not None])
        info.folder = fake_folder(config, config["poison"], key)
        item_tokens = dataset.field2id_token[iid]
        cached = _read_fakes(info.folder, config["dataset"], fake_tokens, dataset.field2token_id[iid])
        if cached is None:
            began = time.perf_counter()
            if config["poison"] == "pga":
                profiles = pga_profiles(csr, info.targets, n_fake, info.filler, config["poison_steps"], rng)
            else:
                profiles = heuristic_profiles(config["poison"], csr, info.targets, n_fake, info.filler,
                                              info.selected, rng)
            ratings = None
            if rating:
                ratings = fake_ratings(config["poison"], profiles, info.targets, info.selected,
                                       (frame[iid], frame[rating].astype(np.float64)), rng)
            info.seconds = time.perf_counter() - began
            _write_fakes(info.folder, config["dataset"], fake_tokens, item_tokens, profiles, ratings, {
                "attack": config["poison"], "fake_users": n_fake, "filler": info.filler, "selected": info.selected,
                "targets": info.target_tokens, "seed": seed, "seconds": info.seconds, "version": POISON_VERSION,
                "settings": settings})
            logger.info(f"Poisoning: {n_fake} fake users ({config['poison']}, {info.filler} filler items, "
                        f"{len(info.targets)} targets) in {info.seconds:.2f} s, written to {info.folder}")
        else:
            profiles, ratings = cached
            logger.info(f"Poisoning: {n_fake} fake users ({config['poison']}) read from {info.folder}")
        frame = _append_fakes(dataset, frame, uid, iid, rating, fake_tokens, profiles, ratings)
        info.fake_users = np.arange(n_users, n_users + n_fake)
        info.changes["fake interactions"] = int(sum(len(p) for p in profiles))
    if config["poison_detector"]:
        total = dataset.user_num
        poisoned = sp.csr_matrix((np.ones(len(frame[uid]), dtype=np.float32), (frame[uid], frame[iid])),
                                 shape=(total, n_items))
        count = len(info.fake_users) if config["poison_detect_users"] is None else \
            _count(config["poison_detect_users"], int((np.asarray(poisoned.sum(1)).ravel() > 0).sum()))
        info.removed = detect(config["poison_detector"], poisoned, count)
        keep = ~np.isin(frame[uid], info.removed)
        frame = {k: v[keep] for k, v in frame.items()}
        precision, recall = info.detection()
        logger.info(f"Detection ({config['poison_detector']}): removed {len(info.removed)} users; precision "
                    f"{precision:.3f}, recall {recall:.3f} of the injected users")
    new = train.copy(Interaction({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in frame.items()}))
    new.poisoning = info
    return new


def _append_fakes(dataset, frame, uid, iid, rating, fake_tokens, profiles, ratings):
    """Give the fake users ids after the real ones (in every split's shared token tables) and add their rows."""
    first = dataset.user_num
    dataset.field2id_token[uid] = np.concatenate([dataset.field2id_token[uid], fake_tokens])
    for k, token in enumerate(fake_tokens):
        dataset.field2token_id[uid][token] = first + k
    if dataset.user_feat is not None:  # a row of padding values per fake user
        extra = Interaction({k: torch.zeros((len(fake_tokens), *v.shape[1:]), dtype=v.dtype)
                             for k, v in dataset.user_feat.interaction.items()})
        extra.interaction[uid] = torch.arange(first, first + len(fake_tokens))
        dataset.user_feat = cat_interactions([dataset.user_feat, extra])
    lengths = [len(p) for p in profiles]
    added = {uid: np.repeat(np.arange(first, first + len(profiles)), lengths), iid: np.concatenate(profiles)}
    if rating:
        added[rating] = np.concatenate(ratings).astype(frame[rating].dtype)
    for key, values in frame.items():  # other columns (e.g. timestamps): the latest value, so orderings keep
        if key not in added:
            added[key] = np.full((len(added[uid]), *values.shape[1:]), values.max() if len(values) else 0,
                                 dtype=values.dtype)
    return {k: np.concatenate([frame[k], added[k].astype(frame[k].dtype)]) for k in frame}


def use_poisoned_split(config, dataset):
    """Give ``dataset`` a ``build`` whose training split is poisoned (the instance's own attribute, as
    ``heldout.use_heldout_split``: nothing of RecBole changes)."""
    if not wanted(config):
        return
    split = dataset.build

    def build():
        train, valid, test = split()
        parts = [poison_split(config, dataset, train), valid, test]
        for part in parts:  # the splits are shallow copies: the user features that hold the fake users' rows
            part.user_feat = dataset.user_feat
        return parts

    dataset.build = build
