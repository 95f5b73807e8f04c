"""Rank change of the clean test items under an untargeted attack (AMR figure 5).

The rank of every clean test item for its user, before and after the attack (the first adversarial method
of ``attack``, else FGM, at the largest ``attack_eps`` on the attacked targets): the distribution of the
change as a histogram, with its mean, median and the share of test items that fell more than 10 places.
Ranks are those of ``promotion.ranks`` (full ranking, training items masked).
"""
import numpy as np
import torch

from recbole_robust import settings
from recbole_robust.perturb.ascent import attack_perturbations
from recbole_robust.robustness.analyses.base import Analysis, Result, mean_std
from recbole_robust.robustness.analyses.promotion import ranks
from recbole_robust.robustness.attacks import attack_methods, attack_terms, pgd_settings
from recbole_robust.robustness.report import Column, rank_change_histogram

FELL_FAR = 10


def rank_change(model, config, train_data, test_data, method, eps, seed=0, pgd=None):
    """Rank of each clean test item for its user before and after an untargeted attack: (before, after)."""
    terms = attack_terms(config, model)
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


def attack_of(config):
    """The untargeted attack: the first adversarial method of ``attack``, else FGM, at the largest ``attack_eps``."""
    method = next((m for m in attack_methods(config["attack"] or []) if m != "random"), "fgm")
    return method, max(settings.as_list(config["attack_eps"]))


def summary(change):
    return {"test_items": int(len(change)), "mean_change": float(change.mean()),
            "median_change": float(np.median(change)), "share_fell": float((change > 0).mean()),
            "share_fell_far": float((change > FELL_FAR).mean()), "share_rose": float((change < 0).mean())}


COLUMNS = [Column("test items", "test_items", "int"), Column("mean change", "mean_change"),
           Column("median change", "median_change"), Column("share that fell", "share_fell", "percent"),
           Column(f"share that fell > {FELL_FAR} places", "share_fell_far", "percent"),
           Column("share that rose", "share_rose", "percent")]


class RankChangeAnalysis(Analysis):
    name = "rank_change"
    heading = "Rank change of the clean test items under the untargeted attack"

    def check(self, config, model):
        attack_terms(config, model)

    def run(self, context):
        config, model = context.config, context.trainer.model
        method, eps = attack_of(config)
        before, after = rank_change(model, config, context.train_data, context.test_data, method, eps,
                                    seed=config["seed"], pgd=pgd_settings(config))
        before, after = before.numpy(), after.numpy()
        keep = ~(np.isnan(before) | np.isnan(after))
        before, after = before[keep], after[keep]
        records = [{"rank_before": int(b), "rank_after": int(a)} for b, a in zip(before, after)]
        title = f"rank change of the clean test items under {method}, eps {eps:g}"
        return Result(self.name, title, records, COLUMNS, {"before": before, "after": after, "change": after - before, "method": method,
                                                       "eps": eps},
                      shown=[summary(after - before)])

    def plot(self, result, path, title):
        rank_change_histogram(path, {title: result.data["change"]}, f"{title}: {result.title}")
        return True

    def section(self, report, results):
        first = next(iter(results.values()))[0]
        records, pooled = [], {}
        for label, runs in results.items():
            per_run = [summary(r.data["change"]) for r in runs]
            record = {"model": label, "n": len(runs)}
            for key in per_run[0]:
                record[f"{key}_mean"], record[f"{key}_std"], _ = mean_std([s[key] for s in per_run])
            records.append(record)
            pooled[label] = np.concatenate([r.data["change"] for r in runs])
        path = rank_change_histogram(report.path(self.name), pooled, f"{report.dataset}: {first.title}")
        report.heading(self.heading)
        report.text(first.title.capitalize() + " (AMR figure 5); the checkpoints of a model pooled.")
        report.figure(path, "distribution of the rank changes, one histogram per model")
        report.table(self.name, self.heading, records, [
            Column("model", kind="str"), Column("mean change", "mean_change", "mean_std"),
            Column("median change", "median_change", "mean_std"),
            Column(f"share that fell > {FELL_FAR} places", "share_fell_far", "percent_std"),
            Column("share that rose", "share_rose", "percent_std"), Column("n", kind="int")])


ANALYSIS: Analysis = RankChangeAnalysis()
