"""Attacks at test time (``--attack``; AMR table 3 and figure 4, ACAE table 2 and figure 4): the entry of
``robustness/attacks.py`` (what each method computes) in the analyses.

For every target group, method of ``attack`` (an adversarial one always with its random control) and eps of
``attack_eps``: the test metrics under the perturbation, their relative drop, and, in the report, a paired
t-test of clean against attacked across test users. eps is the L2 norm of the perturbation per row
(features, embeddings) or per tensor (weight matrices), as the model's ``perturbation_targets`` say.
"""
import numpy as np
from scipy import stats

from recbole_robust.robustness.analyses.base import Analysis, Result, drop, mean_std
from recbole_robust.robustness.attacks import (SETTINGS, attack_methods, attack_sweep, attack_terms, pgd_settings)
from recbole_robust.robustness.report import Column, sweep_figure
from recbole_robust.settings import as_list

KIND = {"row": "L2 norm per row", "tensor": "L2 norm of the whole tensor"}


def user_mean(per_user):
    """Each user's metrics averaged over runs (a list of ``{metric: array over users}``); None when the runs
    evaluated different numbers of users (no paired test is possible then)."""
    if not per_user or len({len(next(iter(p.values()), [])) for p in per_user}) != 1:
        return None
    return {m: np.mean([p[m] for p in per_user], axis=0) for m in per_user[0]}


def paired_p(clean, attacked):
    """``(t, p)`` of a two-sided paired t-test of two arrays over users (``(0, 1)`` when they are equal)."""
    if clean is None or attacked is None:
        return float("nan"), float("nan")
    if not np.any(clean != attacked):
        return 0.0, 1.0
    t, p = stats.ttest_rel(clean, attacked)
    return float(t), float(p)


class AttackAnalysis(Analysis):
    name = "attack"
    option = "attack"
    heading = "Attacks at test time"
    settings = SETTINGS

    def enabled(self, config):
        return bool(config["attack"])

    def check(self, config, model):
        attack_terms(config, model)

    def run(self, context):
        config = context.config
        per_user = []

        def evaluate(trainer, data, tensors=None):
            metrics, users = context.evaluate(tensors)
            per_user.append(users)
            return metrics

        terms = attack_terms(config, context.trainer.model)
        clean, rows = attack_sweep(context.trainer, context.train_data, context.test_data,
                                   as_list(config["attack_eps"]), attack_methods(config["attack"]),
                                   seed=config["seed"], pgd=pgd_settings(config), evaluate=evaluate, terms=terms)
        for row, users in zip(rows, per_user[1:]):  # the first evaluation is the clean one
            row["per_user"] = users
        records = [{"target": r["target"], "method": r["method"], "eps": r["eps"], "metric": m,
                    "clean": float(clean[m]), "attacked": float(r[m]), "relative_drop": drop(clean[m], r[m])}
                   for r in rows for m in clean]
        columns = [Column("target", kind="str"), Column("method", kind="str"), Column("eps", kind="g"),
                   Column(f"clean {context.metric}", "clean"), Column(f"attacked {context.metric}", "attacked"),
                   Column("relative drop", "relative_drop", "percent")]
        pgd = pgd_settings(config)
        step = pgd["step_size"] if pgd["step_size"] is not None else 2.5 / pgd["steps"]
        kinds = {"+".join(names): KIND[kinds[0]] for names, kinds in terms}
        title = (f"{', '.join(m for m in attack_methods(config['attack']))} on "
                 f"{'; '.join(f'{t} (eps: {k})' for t, k in kinds.items())}"
                 + (f"; PGD: {pgd['steps']} steps of {step:g} eps" if "pgd" in attack_methods(config["attack"])
                    else ""))
        return Result(self.name, title, records, columns,
                      {"clean": dict(clean), "clean_users": context.clean_users, "rows": rows, "metric": context.metric,
                       "eps_meaning": kinds},
                      shown=[r for r in records if r["metric"] == context.metric])

    def plot(self, result, path, title):
        metric = result.data["metric"]
        clean = result.data["clean"][metric]
        curves = []
        for k, key in enumerate(dict.fromkeys((r["target"], r["method"]) for r in result.data["rows"])):
            points = [(0.0, clean, 0.0, 1)] + [(r["eps"], r[metric], 0.0, 1) for r in result.data["rows"]
                                               if (r["target"], r["method"]) == key]
            curves.append({"label": f"{key[1]} on {key[0]}", "points": points, "colour": k, "method": key[1]})
        sweep_figure(path, f"{title}: attacks at test time", [{"xlabel": "eps", "ylabel": metric, "curves": curves}])
        return True

    def section(self, report, results):
        metric = report.metric
        first = next(iter(results.values()))[0]
        targets = list(dict.fromkeys(r["target"] for r in first.data["rows"]))
        records = []
        report.heading(f"{self.heading} ({metric})")
        report.text(first.title + ". One colour per model; FGM solid, PGD dash-dot, random noise of the same norms "
                    "(the control) dashed.")
        for target in targets:
            absolute, relative = [], []
            for k, (label, runs) in enumerate(results.items()):
                clean = [r.data["clean"][metric] for r in runs]
                clean_users = user_mean([r.data["clean_users"] for r in runs])
                for method in dict.fromkeys(r["method"] for r in runs[0].data["rows"] if r["target"] == target):
                    abs_points, drop_points = [(0.0, *mean_std(clean))], [(0.0, 0.0, 0.0, len(runs))]
                    for eps in sorted({r["eps"] for r in runs[0].data["rows"]
                                       if (r["target"], r["method"]) == (target, method)}):
                        picked = [next(x for x in r.data["rows"] if (x["target"], x["method"], x["eps"])
                                       == (target, method, eps)) for r in runs]
                        values = [p[metric] for p in picked]
                        drops = [drop(c, v) for c, v in zip(clean, values)]
                        t, p = paired_p(None if clean_users is None else clean_users.get(metric),
                                        (user_mean([x["per_user"] for x in picked]) or {}).get(metric))
                        (clean_mean, clean_std, n), (mean, std, _), (drop_mean, drop_std, _) = (
                            mean_std(clean), mean_std(values), mean_std(drops))
                        records.append({"model": label, "target": target, "attack": method, "eps": eps,
                                        "metric": metric, "clean_mean": clean_mean, "clean_std": clean_std,
                                        "attacked_mean": mean, "attacked_std": std, "relative_drop_mean": drop_mean,
                                        "relative_drop_std": drop_std, "t": t, "p": p, "n": n})
                        abs_points.append((eps, mean, std, n))
                        drop_points.append((eps, 100 * drop_mean, 100 * drop_std, n))
                    curve = {"label": f"{label}: {method}", "colour": k, "method": method}
                    absolute.append({**curve, "points": abs_points})
                    relative.append({**curve, "points": drop_points})
            eps_text = first.data["eps_meaning"].get(target, "")
            path = sweep_figure(report.path(f"attack-{target.replace('+', '_').replace('.', '_')}"),
                                f"{report.dataset}: attacks on {target} at test time", [
                {"xlabel": f"eps ({eps_text})", "ylabel": metric, "curves": absolute,
                 "baselines": report.baselines(metric), "title": f"{metric} (mean ± std over checkpoints)"},
                {"xlabel": f"eps ({eps_text})", "ylabel": f"relative drop of {metric} (%)", "curves": relative,
                 "title": "relative drop (each checkpoint against its own clean value)"}])
            report.figure(path, f"{metric} under attacks on {target}: FGM solid, PGD dash-dot, random dashed, "
                                "one colour per model")
        report.table("attacks", f"{self.heading}: {metric}", records, [
            Column("model", kind="str"), Column("attack", kind="str"), Column("target", kind="str"),
            Column("eps", kind="g"), Column("clean", "clean", "mean_std"), Column("attacked", "attacked", "mean_std"),
            Column("relative drop", "relative_drop", "percent_std"), Column("t (clean vs attacked)", "t"),
            Column("p", kind="p"), Column("n", kind="int")])


ANALYSIS: Analysis = AttackAnalysis()
