"""Metrics at full precision, per-user metrics and the paired t-test of two models (AMR section 4: AMR vs
VBPR, p-values).

RecBole's evaluator rounds every metric to ``metric_decimal_place`` (4) decimals, which is fine for a log and
wrong for a relative drop (a drop from 0.0045 is then a multiple of 1/45). ``evaluate_per_user`` captures
the evaluation's data, computes the metrics again with RecBole's own metric classes without rounding, and the
per-user values from the same classes applied to the evaluation's top-k matrix, so that they average exactly
to those numbers.
"""
import inspect
import sys

import numpy as np
import torch
from recbole.evaluator import Evaluator
from recbole.evaluator.register import metrics_dict
from scipy import stats
from tabulate import tabulate

from recbole_robust.errors import RecBoleRobustError
from recbole_robust.robustness.attacks import evaluate_with

UNROUNDED = sys.float_info.dig + 2
"""Decimal places that leave a float as it is (``round(x, 17) == x``)."""


def exact_metrics(config, struct):
    """RecBole's metrics of an evaluation's data ``struct``, not rounded."""
    evaluator = Evaluator(config)
    for metric in evaluator.metric_class.values():
        metric.decimal_place = UNROUNDED
    return {key: float(value) for key, value in evaluator.evaluate(struct).items()}


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
    ``(metrics at full precision, per-user metrics)``."""
    captured = {}
    evaluate_struct = trainer.evaluator.evaluate

    def capture(struct):
        captured["struct"] = struct
        return evaluate_struct(struct)

    trainer.evaluator.evaluate = capture
    try:
        evaluate_with(trainer, test_data, tensors)  # seeded: both models see the same sampled negatives
    finally:
        trainer.evaluator.evaluate = evaluate_struct
    struct = captured["struct"]
    return exact_metrics(trainer.config, struct), per_user_metrics(trainer.config, struct)


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


BASELINE_MODELS = ("Random", "Pop")
"""RecBole's chance and popularity models: what a perturbed model's metric is compared with."""


def baseline_metrics(trainer, train_data, test_data):
    """Test metrics (full precision) of RecBole's ``Random`` and ``Pop`` on the trainer's data and split,
    evaluated by the trainer (its evaluator, its seed): ``{model name: {metric: value}}``."""
    from recbole.utils import get_model

    config, device, trained = trainer.config, trainer.device, trainer.model
    out = {}
    for name in BASELINE_MODELS:
        model = get_model(name)(config, train_data._dataset).to(device)
        if name == "Pop":  # Pop learns by counting the training items, in one pass
            with torch.no_grad():
                for interaction in train_data:
                    model.calculate_loss(interaction.to(device))
        trainer.model = model
        try:
            out[name] = evaluate_per_user(trainer, test_data)[0]
        finally:
            trainer.model = trained
    return out
