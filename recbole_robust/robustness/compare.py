"""Per-user metrics and the paired t-test of two models (AMR section 4: AMR vs VBPR, p-values).

RecBole's evaluator averages over users; the per-user values come from the same RecBole metric
classes applied to the evaluation's top-k matrix, so they average exactly to RecBole's numbers.
"""
import inspect

import numpy as np
from recbole.evaluator.register import metrics_dict
from scipy import stats
from tabulate import tabulate

from recbole_robust.errors import RecBoleRobustError
from recbole_robust.robustness.attacks import evaluate_with


def per_user_metrics(config, struct):
    """``{"ndcg@10": array over test users, ...}`` for the top-k metrics of ``config``."""
    values = {}
    for name in config["metrics"]:
        metric = metrics_dict[name.lower()](config)
        if not hasattr(metric, "used_info"):
            continue  # not a top-k metric
        pos_index, pos_len = metric.used_info(struct)
        n_args = len(inspect.signature(metric.metric_info).parameters)
        result = metric.metric_info(pos_index, pos_len) if n_args == 2 else metric.metric_info(pos_index)
        for k in config["topk"]:
            values[f"{name.lower()}@{k}"] = np.asarray(result[:, k - 1], dtype=float)
    return values


def evaluate_per_user(trainer, test_data, tensors=None):
    """Evaluate (with ``tensors`` replacing the model's, as ``evaluate_with``) and return
    ``(result, per-user metrics)``."""
    captured = {}
    evaluate_struct = trainer.evaluator.evaluate

    def capture(struct):
        captured["struct"] = struct
        return evaluate_struct(struct)

    trainer.evaluator.evaluate = capture
    try:
        result = evaluate_with(trainer, test_data, tensors)  # seeded: both models see the same sampled negatives
    finally:
        trainer.evaluator.evaluate = evaluate_struct
    return result, per_user_metrics(trainer.config, captured["struct"])


def paired_t_test(name_a, per_user_a, name_b, per_user_b):
    """Rows ``metric, mean A, mean B, relative gain of B, t, p`` (two-sided, paired over users)."""
    rows = []
    for metric in per_user_a:
        a, b = per_user_a[metric], per_user_b[metric]
        if len(a) != len(b):
            raise RecBoleRobustError(f"the two runs evaluated different users ({len(a)} vs {len(b)})")
        t, p = stats.ttest_rel(b, a) if np.any(a != b) else (0.0, 1.0)
        gain = (b.mean() - a.mean()) / a.mean() if a.mean() else float("nan")
        rows.append({"metric": metric, name_a: a.mean(), name_b: b.mean(), "gain": gain, "t": float(t),
                     "p": float(p)})
    return rows


def comparison_table(rows, name_a, name_b):
    table = [[r["metric"], r[name_a], r[name_b], f"{100 * r['gain']:+.2f}%", f"{r['t']:.3f}", f"{r['p']:.2e}"]
             for r in rows]
    return tabulate(table, headers=["metric", name_a, name_b, f"{name_b} vs {name_a}", "t", "p (paired t-test)"],
                    tablefmt="github", floatfmt=".4f")
