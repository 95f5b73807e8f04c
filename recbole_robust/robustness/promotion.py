"""Item promotion and rank changes: what an attacker who edits item content achieves (AMR section 1, figure 5;
the threat of the MG paper's figure 1).

* ``promotion`` (analysis ``promotion``): ``promotion_items`` target items (drawn at random with the
  run's seed among the items of the training split) get their content features perturbed, each row
  within an L2 ball of radius eps, by projected gradient *ascent* on the mean score of the targets for
  all users (``attack_steps`` steps of ``attack_step_size`` x eps, as PGD). Reported before and after,
  for each eps: the targets' hit ratio@K (share of (user, target) pairs, the target not among the
  user's training items, with the target in the user's top K of the full ranking that masks the
  training items), mean and median rank; and the same for Gaussian noise of the same norms on the same
  rows (the control). Every content tensor of the model is attacked (``modality_location``); a
  structure built from the raw features at load time (FREEDOM's frozen kNN graph) is not rebuilt.
* ``rank_change`` (analysis ``rank_change``): the rank of every clean test item for its user, before
  and after an untargeted attack (the first adversarial method of ``attack``, else FGM, at the
  largest ``attack_eps`` on ``attack_terms``): the distribution of the change (AMR figure 5), as a
  histogram, with its mean, median and the share of test items that lost more than 10 places.

Ranks are 1-based positions in the full ranking (items the user trained on masked), computed for
chunks of users with the model's ``full_sort_predict`` under the perturbed tensors (``functional_call``).
"""
import numpy as np
import torch
from recbole.data.interaction import Interaction

from recbole_robust.errors import RecBoleRobustError
from recbole_robust.model.contract import hook
from recbole_robust.perturb.ascent import attack_perturbations, projected_ascent
from recbole_robust.robustness.attacks import attack_terms
from recbole_robust.perturb.engine import call_with, gradients, named_tensor, normalise

USER_CHUNK = 64
PAIRS_PER_PASS = 1 << 16


def content_tensors(model):
    """Names of the model's item content feature tensors (one per modality, or one shared), checked to
    reach its scores (the scores of a few pairs have a non-zero gradient with respect to them): a model that
    uses its features only in a training loss (BM3) or in a structure built from them at load time (FREEDOM's
    frozen kNN graph) cannot have items promoted by them."""
    modalities = list(hook(model, "modalities") or [])
    if not hook(model, "modality_location") or not modalities:
        raise RecBoleRobustError(f"{type(model).__name__} has no item content features to promote items with")
    names = list(dict.fromkeys(model.modality_location(m)[0] for m in modalities))
    device = named_tensor(model, names[0]).device
    users = torch.arange(1, min(model.n_users, 9), device=device)
    items = torch.arange(1, min(model.n_items, 9), device=device)
    pairs = Interaction({model.USER_ID: users.repeat_interleave(len(items)), model.ITEM_ID: items.repeat(len(users))})
    training = model.training
    model.eval()
    try:
        grads = gradients(model, names, lambda p: model.predict(p).sum(), pairs)
    finally:
        model.train(training)
    if not any(bool(g.any()) for g in grads.values()):
        raise RecBoleRobustError(
            f"{type(model).__name__}'s scores do not depend on its item content features ({', '.join(names)}), "
            "so items cannot be promoted by them: use a model that scores with its features (VBPR, AMR, MMGCN, "
            "GRCN, LATTICE, DualGNN, DRAGON, SLMRec)")
    return names


def choose_targets(train_csr, count, seed):
    """``count`` items of the training split, at random (``seed``), sorted."""
    trained = np.flatnonzero(np.asarray(train_csr.sum(0)).ravel() > 0)
    trained = trained[trained > 0]
    if not 1 <= count <= len(trained):
        raise RecBoleRobustError(f"promotion_items must be in [1, {len(trained)}] (items of the training split), got {count}")
    return np.sort(np.random.default_rng(seed).choice(trained, count, replace=False))


def _scores(model, users):
    return model.full_sort_predict(Interaction({model.USER_ID: users})).view(len(users), -1)


def ranks(model, tensors, users, items, train_csr):
    """1-based rank of ``items[k]`` for ``users[k]`` (paired) or, with ``items`` 2-D [n_users, T], of each
    item for its row's user, in the full ranking with the user's training items masked. A pair whose
    item the user trained on gets NaN."""
    device = next(model.parameters()).device
    paired = items.dim() == 1
    out = torch.empty(items.shape if not paired else (len(items),), dtype=torch.float64)

    def compute():
        for start in range(0, len(users), USER_CHUNK):
            chunk = users[start:start + USER_CHUNK]
            scores = _scores(model, chunk.to(device)).cpu().double()
            scores[:, 0] = -np.inf
            rows, cols = train_csr[chunk.numpy()].nonzero()
            chosen = items[start:start + USER_CHUNK]
            chosen = chosen.unsqueeze(1) if paired else chosen
            scores[torch.from_numpy(rows), torch.from_numpy(cols)] = -np.inf
            target = scores.gather(1, chosen)
            rank = 1 + (scores.unsqueeze(1) > target.unsqueeze(2)).sum(-1).double()
            rank[torch.isinf(target)] = np.nan  # an item the user trained on (masked), or padding
            out[start:start + USER_CHUNK] = rank.squeeze(1) if paired else rank

    model.eval()
    with torch.no_grad():
        call_with(model, tensors, compute)
    return out


def promotion_summary(target_ranks, topk):
    r = target_ranks[~torch.isnan(target_ranks)]
    return {f"hit_ratio@{topk}": float((r <= topk).double().mean()), "mean_rank": float(r.mean()),
            "median_rank": float(r.median())}


def promotion_perturbation(model, names, targets, users, eps, steps=10, step_size=None):
    """Perturbations ``{name: delta}`` of the target rows (L2 <= eps each) that raise their mean score."""
    device = named_tensor(model, names[0]).device
    rows = torch.zeros(named_tensor(model, names[0]).shape[0], 1, dtype=torch.bool, device=device)
    rows[torch.as_tensor(targets, device=device)] = True
    targets = torch.as_tensor(targets)
    chunk = max(1, PAIRS_PER_PASS // len(targets))  # users per pass, so that a pass scores a bounded number of pairs
    model.eval()

    def mean_score(pairs):
        return model.predict(pairs).sum() / (len(users) * len(targets))

    def gradient_at(delta):  # of the targets' mean score, on the target rows only
        grads = {n: torch.zeros_like(delta[n]) for n in names}
        for start in range(0, len(users), chunk):
            part = users[start:start + chunk]
            pairs = Interaction({model.USER_ID: part.repeat_interleave(len(targets)).to(device),
                                 model.ITEM_ID: targets.repeat(len(part)).to(device)})
            for n, g in gradients(model, names, mean_score, pairs, offset=delta).items():
                grads[n] += g * rows
        return grads

    start = {n: torch.zeros_like(named_tensor(model, n)) for n in names}
    return projected_ascent(gradient_at, start, ["row"] * len(names), eps, steps, step_size)


def promotion(trainer, train_data, count, eps_list, topk=20, steps=10, step_size=None, seed=0):
    """The promotion analysis: rows ``{method, eps, hit_ratio@K, mean_rank, median_rank}`` and the targets."""
    model = trainer.model
    if any(e < 0 for e in eps_list):
        raise RecBoleRobustError(f"promotion_eps must be >= 0, got {min(eps_list)}")
    names = content_tensors(model)
    train_csr = train_data.dataset.inter_matrix(form="csr")
    targets = choose_targets(train_csr, count, seed)
    users = torch.arange(1, model.n_users)
    grid = torch.as_tensor(targets).repeat(len(users), 1)
    clean = promotion_summary(ranks(model, {}, users, grid, train_csr), topk)
    rows = [{"method": "clean", "eps": 0.0, **clean}]
    generator = torch.Generator().manual_seed(seed)
    for eps in eps_list:
        delta = promotion_perturbation(model, names, targets, users, eps, steps, step_size)
        for method in ("pgd", "random"):
            if method == "random":  # Gaussian noise with the norms of the promotion perturbation, row by row
                delta = {n: normalise(torch.randn(d.shape, generator=generator).to(d), 1.0, "row")
                         * d.norm(dim=-1, keepdim=True) for n, d in delta.items()}
            tensors = {n: named_tensor(model, n).detach() + delta[n] for n in names}
            rows.append({"method": method, "eps": float(eps),
                         **promotion_summary(ranks(model, tensors, users, grid, train_csr), topk)})
    return targets, rows


def rank_change(trainer, train_data, test_data, method, eps, seed=0, pgd=None):
    """Rank of each clean test item for its user before and after an untargeted attack: (before, after)."""
    model = trainer.model
    terms = attack_terms(trainer.config, model)
    train_csr = train_data.dataset.inter_matrix(form="csr")
    inter = test_data.dataset.inter_feat
    users, items = inter[model.USER_ID].cpu(), inter[model.ITEM_ID].cpu()
    order = torch.argsort(users, stable=True)  # users in chunks: one full ranking per user
    users, items = users[order], items[order]
    unique, counts = torch.unique_consecutive(users, return_counts=True)
    tensors = attack_perturbations(model, train_data, terms, eps, method, pgd, seed)
    # each user's test items as one row of a padded grid, so that one full ranking serves all of them
    row = torch.arange(len(unique)).repeat_interleave(counts)
    position = torch.arange(len(users)) - (torch.cumsum(counts, 0) - counts).repeat_interleave(counts)
    grid = torch.zeros(len(unique), int(counts.max()), dtype=torch.long)
    grid[row, position] = items
    before, after = (ranks(model, t, unique, grid, train_csr)[row, position] for t in ({}, tensors))
    return before, after
