"""Test metrics by slice (RGRecSys' slicing, Ovaisi et al. 2022): by user activity and by item popularity.

Users are split into ``slice_groups`` groups of equal size by the number of their training interactions;
items likewise by their training popularity (items the training split never saw form a group of their
own, "cold"). For each user group: recall@K and NDCG@K of its users; for each item group: recall@K of
the test interactions with its items (per user, the share of the user's test items of the group in the
top K; users without such items do not count). K is the K of the report's metric (else the largest
``topk``). The ranking is the evaluation's own: RecBole's test loader, its history items masked.
"""
import numpy as np
import torch

from recbole_robust import settings
from recbole_robust.robustness.analyses.base import Analysis, Result, mean_std
from recbole_robust.robustness.report import Column


def top_items(model, test_data, k):
    """``(users, top-k item ids [n_users, k], positive items per user)`` of the test evaluation."""
    device = next(model.parameters()).device
    users, tops, positives = [], [], {}
    model.eval()
    with torch.no_grad():
        for interaction, history_index, positive_u, positive_i in test_data:
            batch_users = interaction[model.USER_ID]
            scores = model.full_sort_predict(interaction.to(device)).view(len(batch_users), -1).cpu()
            scores[:, 0] = -np.inf
            if history_index is not None:
                scores[history_index[0], history_index[1]] = -np.inf
            tops.append(scores.topk(k, dim=1).indices.numpy())
            users.append(batch_users.numpy())
            for u, i in zip(batch_users[positive_u].numpy(), positive_i.numpy()):
                positives.setdefault(int(u), []).append(int(i))
    return np.concatenate(users), np.concatenate(tops), positives


def groups_of(values, n_groups):
    """Group index (0 = lowest) of each value, groups of (nearly) equal size by rank."""
    order = np.argsort(values, kind="stable")
    group = np.empty(len(values), dtype=np.int64)
    group[order] = np.arange(len(values)) * n_groups // max(len(values), 1)
    return group


def slice_metrics(users, tops, positives, activity, popularity, n_groups, k):
    records = []
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    user_group = groups_of(activity[users], n_groups)
    for g in range(n_groups):
        recall, ndcg = [], []
        for row in np.flatnonzero(user_group == g):
            pos = set(positives.get(int(users[row]), []))
            if not pos:
                continue
            hits = np.array([i in pos for i in tops[row]])
            recall.append(hits.sum() / len(pos))
            ndcg.append((hits * discounts).sum() / discounts[:min(len(pos), k)].sum())
        span = activity[users][user_group == g]
        records.append({"slice": "users by activity", "group": g + 1, "range": f"{int(span.min())}-{int(span.max())}",
                        "count": len(recall), f"recall@{k}": float(np.mean(recall)) if recall else float("nan"),
                        f"ndcg@{k}": float(np.mean(ndcg)) if ndcg else float("nan")})
    seen = np.flatnonzero(popularity > 0)
    item_group = np.full(len(popularity), -1)
    item_group[seen] = groups_of(popularity[seen], n_groups)
    item_group[0] = -2
    cold = np.flatnonzero(popularity == 0)
    for g in [*range(n_groups), -1]:
        recall, pairs = [], 0
        for row, u in enumerate(users):
            pos = [i for i in positives.get(int(u), []) if item_group[i] == g]
            if pos:
                recall.append(np.isin(pos, tops[row]).sum() / len(pos))
                pairs += len(pos)
        if g == -1 and not pairs:
            continue
        span = popularity[item_group == g] if g >= 0 else np.zeros(1)
        records.append({"slice": "items by popularity", "group": g + 1 if g >= 0 else "cold",
                        "range": f"{int(span.min())}-{int(span.max())}" if g >= 0 else f"0 ({len(cold) - 1} items)",
                        "count": pairs, f"recall@{k}": float(np.mean(recall)) if recall else float("nan"),
                        f"ndcg@{k}": float("nan")})
    return records


def slice_k(config, metric):
    name, _, k = metric.partition("@")
    return int(k) if k.isdigit() else max(settings.as_list(config["topk"]))


class SlicesAnalysis(Analysis):
    name = "slices"
    heading = "Test metrics by user activity and item popularity"
    settings = {"slice_groups": settings.POSITIVE_INT}

    def run(self, context):
        config, model = context.config, context.trainer.model
        k = slice_k(config, context.metric)
        train = context.train_data.dataset
        csr = train.inter_matrix(form="csr")
        real = getattr(getattr(train, "poisoning", None), "real_users", csr.shape[0])
        activity = np.asarray(csr.sum(1)).ravel()
        popularity = np.asarray(csr[:real].sum(0)).ravel()
        users, tops, positives = top_items(model, context.test_data, k)
        records = slice_metrics(users, tops, positives, activity, popularity, config["slice_groups"], k)
        columns = [Column("slice", kind="str"), Column("group", kind="str"), Column("training interactions", "range",
                                                                                     "str"),
                   Column("users / test pairs", "count", "int"), Column(f"recall@{k}"), Column(f"ndcg@{k}")]
        return Result(self.name, f"{config['slice_groups']} groups of equal size, @{k}", records, columns,
                      {"k": k, "records": records})

    def section(self, report, results):
        k = next(iter(results.values()))[0].data["k"]
        records = []
        for label, runs in results.items():
            for position, row in enumerate(runs[0].data["records"]):
                record = {"model": label, "slice": row["slice"], "group": str(row["group"]), "range": row["range"],
                          "n": len(runs)}
                for key in (f"recall@{k}", f"ndcg@{k}"):
                    values = [r.data["records"][position][key] for r in runs]
                    record[f"{key}_mean"], record[f"{key}_std"], _ = mean_std(values)
                records.append(record)
        report.heading(self.heading)
        report.text(f"{next(iter(results.values()))[0].title.capitalize()}; items by popularity: recall@{k} of the "
                    "test interactions with the group's items (NDCG is not defined per item group). Ranges: training "
                    "interactions of the group's users or items (first checkpoint).")
        report.table(self.name, self.heading, records, [
            Column("model", kind="str"), Column("slice", kind="str"), Column("group", kind="str"),
            Column("training interactions", "range", "str"), Column(f"recall@{k}", f"recall@{k}", "mean_std"),
            Column(f"ndcg@{k}", f"ndcg@{k}", "mean_std"), Column("n", kind="int")])


ANALYSIS: Analysis = SlicesAnalysis()
