"""Robustness reports: CSV (every metric), Markdown tables and PNG plots.

Attack rows give the clean metric, the attacked metric and the relative drop
``(clean - attacked) / clean``. Files are written to a temporary name and renamed, so a report is
either complete or absent.
"""
import os
from pathlib import Path

from tabulate import tabulate

from recbole_robust.utils import atomic_write, write_csv


def _pyplot():
    """matplotlib's pyplot on the Agg backend, imported when a plot is drawn (it costs ~50 MB)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def drop(clean, attacked):
    return (clean - attacked) / clean if clean else 0.0


def long_rows(clean, rows):
    """One record per (target, method, eps, metric) with clean, attacked and relative drop."""
    records = []
    for row in rows:
        for metric, value in row.items():
            if metric in ("target", "method", "eps"):
                continue
            records.append({
                "target": row["target"], "method": row["method"], "eps": row["eps"], "metric": metric,
                "clean": float(clean[metric]), "attacked": float(value), "relative_drop": drop(clean[metric], value),
            })
    return records


def markdown_table(clean, rows, metric, title):
    table = [
        [r["target"], r["method"], r["eps"], clean[metric], r[metric], f"{100 * drop(clean[metric], r[metric]):.1f}%"]
        for r in rows
    ]
    headers = ["target", "method", "eps", f"clean {metric}", f"attacked {metric}", "relative drop"]
    return f"### {title}\n\n" + tabulate(table, headers=headers, tablefmt="github", floatfmt=".4f") + "\n"


def plot(clean, rows, metric, title, path):
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    for target in dict.fromkeys(r["target"] for r in rows):
        for method in dict.fromkeys(r["method"] for r in rows):
            points = sorted((r["eps"], r[metric]) for r in rows if r["target"] == target and r["method"] == method)
            if points:
                xs, ys = zip(*[(0.0, clean[metric])] + points)
                ax.plot(xs, ys, marker="o", linestyle="-" if method == "fgm" else "--", label=f"{method} on {target}")
    ax.set_xlabel("eps (L2 norm of the perturbation)")
    ax.set_ylabel(metric)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=120))
    plt.close(fig)


def write_attack_report(clean, rows, metric, out_dir, title):
    """Write ``attack.csv``, ``attack.md`` and ``attack.png`` into ``out_dir``; returns their paths."""
    os.makedirs(out_dir, exist_ok=True)
    paths = {ext: os.path.join(out_dir, f"attack.{ext}") for ext in ("csv", "md", "png")}
    records = long_rows(clean, rows)
    write_csv(paths["csv"], records)
    text = markdown_table(clean, rows, metric, title)
    atomic_write(paths["md"], lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))
    plot(clean, rows, metric, title, paths["png"])
    return paths, text


def write_table_report(out_dir, name, records, columns, title):
    """``<name>.csv`` with every record and ``<name>.md`` with ``columns``; returns (paths, markdown)."""
    os.makedirs(out_dir, exist_ok=True)
    paths = {ext: os.path.join(out_dir, f"{name}.{ext}") for ext in ("csv", "md")}
    write_csv(paths["csv"], records)
    table = [[r[c] for c in columns] for r in records]
    text = f"### {title}\n\n" + tabulate(table, headers=columns, tablefmt="github", floatfmt=".4f") + "\n"
    atomic_write(paths["md"], lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))
    return paths, text


def write_landscape_report(out_dir, alphas, betas, losses, title):
    """``landscape.csv`` (a, b, loss) and ``landscape.png`` (contour plot); returns the paths."""
    os.makedirs(out_dir, exist_ok=True)
    paths = {ext: os.path.join(out_dir, f"landscape.{ext}") for ext in ("csv", "png")}
    write_csv(paths["csv"], [{"alpha": float(a), "beta": float(b), "loss": float(losses[i, j])}
                             for i, a in enumerate(alphas) for j, b in enumerate(betas)])
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 4.5))
    contour = ax.contourf(betas, alphas, losses, levels=20, cmap="viridis")
    ax.contour(betas, alphas, losses, levels=10, colors="white", linewidths=0.5, alpha=0.6)
    fig.colorbar(contour, ax=ax, label="training loss")
    ax.plot(0, 0, marker="*", color="red", markersize=10)
    ax.set_xlabel("direction 2")
    ax.set_ylabel("direction 1")
    ax.set_title(title)
    fig.tight_layout()
    atomic_write(paths["png"], lambda tmp: fig.savefig(tmp, format="png", dpi=120))
    plt.close(fig)
    return paths


def write_rank_change_report(out_dir, before, after, title):
    """``rank_change.csv`` (rank before and after per test pair), ``.md`` (summary) and ``.png`` (histogram)."""
    import numpy as np

    os.makedirs(out_dir, exist_ok=True)
    paths = {ext: os.path.join(out_dir, f"rank_change.{ext}") for ext in ("csv", "md", "png")}
    keep = ~(np.isnan(before) | np.isnan(after))
    before, after = before[keep], after[keep]
    change = after - before  # > 0: the test item fell
    write_csv(paths["csv"], [{"rank_before": int(b), "rank_after": int(a)} for b, a in zip(before, after)])
    summary = [["test items", len(change)], ["mean change", float(change.mean())],
               ["median change", float(np.median(change))], ["share that fell", float((change > 0).mean())],
               ["share that fell > 10 places", float((change > 10).mean())],
               ["share that rose", float((change < 0).mean())]]
    text = f"### {title}\n\n" + tabulate(summary, headers=["", "value"], tablefmt="github", floatfmt=".4f") + "\n"
    atomic_write(paths["md"], lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))
    rank_change_histogram(paths["png"], {None: change}, title)
    return paths, text


def rank_change_histogram(path, changes, title=None):
    """``path`` (PNG): the histogram of the rank changes (after - before) of each label of ``changes``
    ({label: array}; one unlabelled array (label None): counts; labelled arrays: densities, so that models
    of different test sizes compare)."""
    import numpy as np

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    several = None not in changes
    limit = max(1.0, float(np.percentile(np.abs(np.concatenate(list(changes.values()))), 99)))
    for label, change in changes.items():
        ax.hist(np.clip(change, -limit, limit), bins=60, alpha=0.5 if several else 0.8, label=label,
                density=several, color=None if several else "tab:red")
    ax.axvline(0, color="black", linewidth=0.8)
    ax.set_xlabel("rank after - rank before (positive: the test item fell)")
    ax.set_ylabel("density" if several else "test items")
    if several:
        ax.legend(fontsize=8)
    if title:
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=120))
    plt.close(fig)


def write_sweep_plot(out_dir, name, curves, xlabel, ylabel, title, log_x=False):
    """``<name>.png``: one line per label of ``curves`` ({label: [(x, mean, std)]}) with std error bars."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    for label, points in curves.items():
        points = sorted(p for p in points if not log_x or p[0] > 0)
        xs, ys, errs = zip(*points)
        ax.errorbar(xs, ys, yerr=errs, marker="o", capsize=3, label=label)
    if log_x:
        ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, f"{name}.png")
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=120))
    plt.close(fig)
    return path
