"""Item promotion by content features: what an attacker who edits item content achieves (AMR section 1; the
threat of the MG paper's figure 1).

``promotion_items`` target items (drawn at random with the run's seed among the items of the training split)
get their content features perturbed, each row within an L2 ball of radius eps, by projected gradient *ascent*
on the mean score of the targets for all users (``attack_steps`` steps of ``attack_step_size`` x eps, as PGD).
Reported before and after, for each eps of ``promotion_eps``: the targets' hit ratio@K (``promotion_topk``;
share of (user, target) pairs, the target not among the user's training items, with the target in the user's
top K of the full ranking that masks the training items), mean and median rank; and the same for Gaussian noise
of the same norms on the same rows (the control). Every content tensor of the model is attacked
(``modality_location``); a structure built from the raw features at load time (FREEDOM's frozen kNN graph) is
not rebuilt.

Ranks (``ranks``, also used by ``rank_change``) are 1-based positions in the full ranking (items the user
trained on masked), computed for chunks of users with the model's ``full_sort_predict`` under the perturbed
tensors (``functional_call``).
"""
import numpy as np
import torch
from recbole.data.interaction import Interaction

from recbole_robust import settings
from recbole_robust.errors import RecBoleRobustError
from recbole_robust.model.contract import hook
from recbole_robust.perturb.ascent import projected_ascent
from recbole_robust.perturb.engine import call_with, gradients, named_tensor, normalise
from recbole_robust.robustness.analyses.base import Analysis, Result, mean_std
from recbole_robust.robustness.attacks import SETTINGS as ATTACK_SETTINGS
from recbole_robust.robustness.report import Column, sweep_figure

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


def ranks(model, tensors, users, items, train_csr, with_scores=False):
    """1-based rank of ``items[k]`` for ``users[k]`` (paired) or, with ``items`` 2-D [n_users, T], of each
    item for its row's user, in the full ranking with the user's training items masked. A pair whose
    item the user trained on gets NaN. ``with_scores``: also the pairs' scores (``(ranks, scores)``)."""
    device = next(model.parameters()).device
    paired = items.dim() == 1
    out = torch.empty(items.shape if not paired else (len(items),), dtype=torch.float64)
    out_scores = torch.empty_like(out)

    def compute():
        for start in range(0, len(users), USER_CHUNK):  # on the model's device; only the ranks come back
            chunk = users[start:start + USER_CHUNK]
            scores = _scores(model, chunk.to(device)).clone()  # masked below: never a model's cached scores
            chosen = items[start:start + USER_CHUNK].to(device)
            chosen = chosen.unsqueeze(1) if paired else chosen
            raw = scores.gather(1, chosen)
            out_scores[start:start + USER_CHUNK] = (raw.squeeze(1) if paired else raw).cpu().double()
            scores[:, 0] = -np.inf
            rows, cols = train_csr[chunk.numpy()].nonzero()
            scores[torch.from_numpy(rows).to(device), torch.from_numpy(cols).to(device)] = -np.inf
            target = scores.gather(1, chosen)
            rank = 1 + (scores.unsqueeze(1) > target.unsqueeze(2)).sum(-1).double()
            rank[torch.isinf(target)] = np.nan  # an item the user trained on (masked), or padding
            out[start:start + USER_CHUNK] = (rank.squeeze(1) if paired else rank).cpu()

    model.eval()
    with torch.no_grad():
        call_with(model, tensors, compute)
    return (out, out_scores) if with_scores else out


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


def promotion(model, train_data, count, eps_list, topk=20, steps=10, step_size=None, seed=0):
    """Rows ``{method, eps, hit_ratio@K, mean_rank, median_rank}`` of the promotion, and the targets."""
    names = content_tensors(model)
    train_csr = train_data.dataset.inter_matrix(form="csr")
    targets = choose_targets(train_csr, count, seed)
    users = torch.arange(1, model.n_users)
    grid = torch.as_tensor(targets).repeat(len(users), 1)
    clean = promotion_summary(ranks(model, {}, users, grid, train_csr), topk)
    rows = [{"method": "clean", "eps": 0.0, **clean}]
    generator = torch.Generator(device=next(model.parameters()).device).manual_seed(seed)  # on the model's device
    for eps in eps_list:
        delta = promotion_perturbation(model, names, targets, users, eps, steps, step_size)
        for method in ("pgd", "random"):
            if method == "random":  # Gaussian noise with the norms of the promotion perturbation, row by row
                delta = {n: normalise(torch.randn(d.shape, generator=generator, device=d.device, dtype=d.dtype), 1.0,
                                           "row")
                         * d.norm(dim=-1, keepdim=True) for n, d in delta.items()}
            tensors = {n: named_tensor(model, n).detach() + delta[n] for n in names}
            rows.append({"method": method, "eps": float(eps),
                         **promotion_summary(ranks(model, tensors, users, grid, train_csr), topk)})
    return targets, rows


class PromotionAnalysis(Analysis):
    name = "promotion"
    heading = "Item promotion by content features"
    settings = {
        "promotion_items": settings.POSITIVE_INT,
        "promotion_eps": settings.NON_NEGATIVE_LIST,
        "promotion_topk": settings.POSITIVE_INT,
    }

    def check(self, config, model):
        content_tensors(model)
        settings.check_config(config, {k: ATTACK_SETTINGS[k] for k in ("attack_steps", "attack_step_size")})

    def check_data(self, config, train_data):
        choose_targets(train_data.dataset.inter_matrix(form="csr"), config["promotion_items"], config["seed"])

    def run(self, context):
        config = context.config
        topk = config["promotion_topk"]
        targets, rows = promotion(context.trainer.model, context.train_data, config["promotion_items"],
                                  settings.as_list(config["promotion_eps"]), topk, config["attack_steps"],
                                  config["attack_step_size"], seed=config["seed"])
        columns = [Column("method", kind="str"), Column("eps", kind="g"), Column(f"hit_ratio@{topk}"),
                   Column("mean rank", "mean_rank"), Column("median rank", "median_rank")]
        title = f"promotion of {len(targets)} items by their content features ({config['attack_steps']} PGD steps)"
        return Result(self.name, title, rows, columns, {"targets": targets.tolist(), "rows": rows, "topk": topk})

    def plot(self, result, path, title):
        hit = f"hit_ratio@{result.data['topk']}"
        clean = [(0.0, r[hit], 0.0, 1) for r in result.records if r["method"] == "clean"]
        curves = [{"label": method, "method": method, "points": clean + [
            (r["eps"], r[hit], 0.0, 1) for r in result.records if r["method"] == method]} for method in ("pgd", "random")]
        sweep_figure(path, f"{title}: {result.title}", [{"xlabel": "eps (L2 norm per target item)", "ylabel": hit,
                                                        "curves": curves}])
        return True

    def section(self, report, results):
        first = next(iter(results.values()))[0]
        hit = f"hit_ratio@{first.data['topk']}"
        records, curves = [], []
        for k, (label, runs) in enumerate(results.items()):
            rows = [r.data["rows"] for r in runs]
            by_method = {}
            for method, eps in dict.fromkeys((x["method"], x["eps"]) for x in rows[0]):
                picked = [next(x for x in rs if (x["method"], x["eps"]) == (method, eps)) for rs in rows]
                record = {"model": label, "method": method, "eps": eps, "n": len(picked)}
                for key in (hit, "mean_rank", "median_rank"):
                    record[f"{key}_mean"], record[f"{key}_std"], _ = mean_std([p[key] for p in picked])
                records.append(record)
                by_method.setdefault(method, []).append((eps, record[f"{hit}_mean"], record[f"{hit}_std"], len(picked)))
            clean = by_method.pop("clean")
            for method, points in by_method.items():
                curves.append({"label": f"{label}: {method}", "points": clean + points, "colour": k, "method": method})
        path = sweep_figure(report.path(self.name), f"{report.dataset}: {self.heading}", [{
            "xlabel": "eps (L2 norm per target item)", "ylabel": f"{hit} of the target items", "curves": curves,
            "title": "PGD ascent (dash-dot) and random noise of the same norms (dashed)"}])
        report.heading(f"{self.heading} ({hit} of the target items)")
        report.text(first.title.capitalize() + ".")
        report.figure(path, f"the targets' {hit} against eps, one colour per model")
        report.table(self.name, f"{self.heading}: {hit}", records, [
            Column("model", kind="str"), Column("method", kind="str"), Column("eps", kind="g"),
            Column(hit, hit, "mean_std"), Column("mean rank", "mean_rank", "mean_std"),
            Column("median rank", "median_rank", "mean_std"), Column("n", kind="int")])


ANALYSIS: Analysis = PromotionAnalysis()
