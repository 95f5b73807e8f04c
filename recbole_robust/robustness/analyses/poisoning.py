"""What fake users bought the attacker (``data/poison.py``): the target items' standing with the real users.

Measured on the trained model, over the pairs (real user, target) where the user never interacted with the
target (clean training split and test split): for each K of ``poison_topk``, the targets' hit ratio@K (share of
pairs with the target in the user's top K, training items masked) and NDCG@K (1 / log2(1 + rank) within the top
K), their mean rank, and their mean score. The run's clean test metrics are on real users only (fake users have
no test interactions). A detector's precision and recall of the injected users are recorded with them.

Enabled by ``poison`` (a poisoned run), or by ``--analysis=poisoning`` (a clean run of the same seed: the same
targets, drawn from the clean split, measured without an attack). The report (``section``) sets every label
beside the label of the same model and training without fake users and without a detector ("before"):
prediction shift (mean change of the targets' scores over the same pairs, per seed), the change of hit ratio,
and a paired t-test over users of the hit ratio@K (each user's mean over the targets, pairs of all seeds).
"""
import numpy as np
import torch

from recbole_robust import settings
from recbole_robust.errors import RecBoleRobustError
from recbole_robust.robustness.analyses.attack import paired_p
from recbole_robust.robustness.analyses.base import Analysis, Result, mean_std, selected
from recbole_robust.robustness.analyses.promotion import ranks
from recbole_robust.robustness.report import Column, sweep_figure


def victim(config):
    """The model and the robust training it had: ``BPR``, ``APR``, ``LightGCN+MG``, ``VBPR+SAM`` ..."""
    name = config["model"]
    if config["adv_targets"] and name not in ("APR", "AMR", "ACAE"):
        name += "+adv"
    if config["mirror_gradient"]:
        name += "+MG"
    if config["sharpness"]:
        name += f"+{config['sharpness'].upper()}"
    return name


def target_metrics(model, info, train_csr, test_csr, topks):
    """Per (real user, target) pair: rank and score; and the summary of the eligible pairs."""
    users = torch.arange(1, info.real_users)
    grid = torch.as_tensor(info.targets).repeat(len(users), 1)
    rank, score = ranks(model, {}, users, grid, train_csr, with_scores=True)
    eligible = torch.from_numpy(info.eligible[1:] & (test_csr[1:info.real_users][:, info.targets].toarray() == 0))
    rank[~eligible] = np.nan
    score[~eligible] = np.nan
    valid = ~torch.isnan(rank)
    if not valid.any():
        raise RecBoleRobustError("no real user is without a target item: no promotion to measure")
    summary = {"pairs": int(valid.sum()), "mean_rank": float(rank[valid].mean()),
               "target_score": float(score[valid].mean())}
    per_user = {}
    for k in topks:
        hit = (rank <= k).double().masked_fill(~valid, np.nan)
        gain = torch.where(rank <= k, 1.0 / torch.log2(1.0 + rank), torch.zeros_like(rank)).masked_fill(~valid, np.nan)
        summary[f"hit@{k}"] = float(hit[valid].mean())
        summary[f"ndcg@{k}"] = float(gain[valid].mean())
        per_user[f"hit@{k}"] = torch.nanmean(hit, dim=1).numpy()  # NaN: a user with no eligible target
    return summary, per_user, score.numpy().astype(np.float32)


class PoisoningAnalysis(Analysis):
    name = "poisoning"
    heading = "Poisoning: fake users promoting target items"
    settings = {"poison_topk": (lambda v: settings.int_list(v, 1), "an integer >= 1 or a list of them")}

    def enabled(self, config):
        return bool(config["poison"]) or self.name in selected(config)

    def check_data(self, config, train_data):
        if getattr(train_data.dataset, "poisoning", None) is None:
            raise RecBoleRobustError("the poisoning analysis needs the run's poisoned training split (data/poison.py)")
        topks = settings.as_list(config["poison_topk"])
        n_items = train_data.dataset.item_num - 1
        if max(topks) > n_items:
            raise RecBoleRobustError(f"poison_topk {max(topks)} is larger than the {n_items} items")

    def run(self, context):
        config = context.config
        info = context.train_data.dataset.poisoning
        topks = settings.as_list(config["poison_topk"])
        train_csr = context.train_data.dataset.inter_matrix(form="csr")
        test_csr = context.test_data.dataset.inter_matrix(form="csr")
        summary, per_user, scores = target_metrics(context.trainer.model, info, train_csr, test_csr, topks)
        precision, recall = info.detection()
        record = {"attack": info.attack or "none", "fake_users": len(info.fake_users),
                  "share": len(info.fake_users) / max(info.real_users - 1, 1), "filler": info.filler,
                  "targets": len(info.targets), **summary, f"clean {context.metric}": context.clean[context.metric],
                  "detector": info.detector or "none", "precision": precision, "recall": recall,
                  "seconds": info.seconds, **{k: v for k, v in info.changes.items()}}
        columns = [Column("attack", kind="str"), Column("fake users", "fake_users", "int"), Column("targets", kind="int"),
                   *[Column(f"{m}@{k}") for k in topks for m in ("hit", "ndcg")], Column("mean rank", "mean_rank"),
                   Column("target score", "target_score"), Column(f"clean {context.metric}"),
                   Column("detector", kind="str")]
        title = (f"{len(info.targets)} targets ({', '.join(info.target_tokens)}), "
                 f"{len(info.fake_users)} fake users ({info.attack or 'no attack'})")
        data = {"victim": victim(config), "attack": info.attack or "none", "share": record["share"],
                "detector": info.detector or "none", "summary": summary, "per_user": per_user, "scores": scores,
                "seed": config["seed"], "topks": topks, "clean": context.clean[context.metric], "metric": context.metric,
                "precision": precision, "recall": recall, "targets": info.target_tokens}
        return Result(self.name, title, [record], columns, data)

    def section(self, report, results):
        first = next(iter(results.values()))[0].data
        topks, metric = first["topks"], first["metric"]
        k = max(topks)  # the figure and the paired test: the largest K, where a promotion shows first
        before = {}
        for label, runs in results.items():
            d = runs[0].data
            if d["attack"] == "none" and d["detector"] == "none":
                before.setdefault(d["victim"], label)
        records, curves, shifts, colours = [], {}, {}, {}
        for label, runs in results.items():
            d = runs[0].data
            record = {"model": label, "victim": d["victim"], "attack": d["attack"], "share": d["share"],
                      "detector": d["detector"], "n": len(runs)}
            for key in [f"{m}@{t}" for t in topks for m in ("hit", "ndcg")] + ["target_score"]:
                record[f"{key}_mean"], record[f"{key}_std"], _ = mean_std([r.data["summary"][key] for r in runs])
            record["clean_mean"], record["clean_std"], _ = mean_std([r.data["clean"] for r in runs])
            base_label = before.get(d["victim"])
            record["shift_mean"] = record["shift_std"] = record["p"] = float("nan")
            if base_label is not None and base_label != label:
                base = {r.data["seed"]: r.data for r in results[base_label]}
                changes, a, b = [], [], []
                for r in runs:
                    if r.data["seed"] not in base:
                        continue
                    clean = base[r.data["seed"]]
                    changes.append(float(np.nanmean(r.data["scores"] - clean["scores"])))
                    x, y = clean["per_user"][f"hit@{k}"], r.data["per_user"][f"hit@{k}"]
                    both = ~np.isnan(x) & ~np.isnan(y)
                    a.append(x[both])
                    b.append(y[both])
                if changes:
                    record["shift_mean"], record["shift_std"], _ = mean_std(changes)
                    record["p"] = paired_p(np.concatenate(a), np.concatenate(b))[1]
            detected = [r.data["precision"] for r in runs if r.data["precision"] is not None]
            record["precision"] = float(np.mean(detected)) if detected else float("nan")
            recalls = [r.data["recall"] for r in runs if r.data["recall"] is not None]
            record["recall"] = float(np.nanmean(recalls)) if recalls else float("nan")
            records.append(record)
            line = (d["victim"], d["detector"], d["attack"])
            colours.setdefault((d["victim"], d["detector"]), len(colours))
            curves.setdefault(line, []).append((d["share"], record[f"hit@{k}_mean"], record[f"hit@{k}_std"], len(runs)))
            shift = (0.0, 0.0) if d["attack"] == "none" else (record["shift_mean"], record["shift_std"])
            shifts.setdefault(line, []).append((d["share"], *shift, len(runs)))
        hit_curves, shift_curves = [], []
        for (name, detector, attack), points in curves.items():
            if attack == "none":
                continue
            start = (name, detector, "none") if (name, detector, "none") in curves else (name, "none", "none")
            label = name + ("" if detector == "none" else f", {detector} detector")
            for out, values in ((hit_curves, curves), (shift_curves, shifts)):
                out.append({"label": f"{label}: {attack}", "points": values.get(start, []) + values[(name, detector,
                                                                                                       attack)],
                            "colour": colours[(name, detector)], "method": attack})
        report.heading(f"{self.heading} (hit ratio@{k} of the targets)")
        report.text(f"{next(iter(results.values()))[0].title.capitalize()} (first checkpoint). Over the pairs (real "
                    "user, target) where the user never interacted with the target; shift: mean change of the targets' "
                    "scores against the same model trained without fake users and without a detector (seed by seed); "
                    f"p: paired t-test over users of hit@{k}. Precision and recall: of the users a detector removed, "
                    "against the injected ones.")
        if hit_curves:
            path = sweep_figure(report.path(self.name), f"{report.dataset}: {self.heading}", [
                {"xlabel": "fake users (share of the real users)", "ylabel": f"hit ratio@{k} of the targets",
                 "curves": hit_curves, "title": "one colour per model (and detector), one line style per attack"},
                {"xlabel": "fake users (share of the real users)", "ylabel": "prediction shift of the targets",
                 "curves": shift_curves, "title": "mean change of the targets' scores against the clean model"}])
            report.figure(path, f"the targets' hit ratio@{k} (left) and prediction shift (right) against the fake "
                                "users' share")
        report.table(self.name, f"{self.heading}", records, [
            Column("model", kind="str"), Column("attack", kind="str"), Column("fake users", "share", "percent"),
            Column("detector", kind="str"),
            *[Column(f"{m}@{t}", f"{m}@{t}", "mean_std") for t in topks for m in ("hit", "ndcg")],
            Column("shift", "shift", "mean_std"), Column("p", kind="p"), Column(f"clean {metric}", "clean", "mean_std"),
            Column("precision", kind="float"), Column("recall", kind="float"), Column("n", kind="int")])


ANALYSIS: Analysis = PoisoningAnalysis()
