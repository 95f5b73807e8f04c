"""Tables and figures of the robustness results: CSV, Markdown, LaTeX (booktabs) and PNG.

Numbers stay at full precision until they are shown: a CSV holds one plain value per cell (a mean, its
std and the number of runs behind it in columns of their own), and only the Markdown, LaTeX and HTML
tables round (4 decimals; p-values below 1e-4 as ``< 1e-4``; counts as integers). Files are written to
a temporary name and renamed, so a table or figure is either complete or absent.
"""
import math
import os
from pathlib import Path

import numpy as np
from tabulate import tabulate

from recbole_robust.utils import atomic_write, write_csv


def _pyplot():
    """matplotlib's pyplot on the Agg backend, imported when a figure is drawn (it costs ~50 MB and ~1 s)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def p_value(p):
    """A p-value as a paper prints it: ``< 1e-4`` below 1e-4, else 4 decimals."""
    if p is None or isinstance(p, float) and math.isnan(p):
        return "n/a"
    return "< 1e-4" if p < 1e-4 else f"{p:.4f}"


class Column:
    """A column of a shown table: its header and how a record's value(s) are shown.

    Kinds: ``str``, ``int``, ``g`` (a setting's value: ``0.001``, ``10``), ``float`` (4 decimals), ``percent`` (a fraction as %, 2 decimals), ``p``
    (``p_value``), ``mean_std`` (``<key>_mean ± <key>_std``), ``percent_std`` (the same in %).
    """

    def __init__(self, header, key=None, kind="float"):
        self.header, self.key, self.kind = header, key or header, kind

    def show(self, record):
        kind, key = self.kind, self.key
        value = record.get(key + "_mean" if kind in ("mean_std", "percent_std") else key)
        if isinstance(value, float) and math.isnan(value) and kind != "p":
            return "n/a"  # e.g. a prediction shift without a clean counterpart
        if kind == "mean_std":
            return f"{record[key + '_mean']:.4f} ± {record[key + '_std']:.4f}"
        if kind == "percent_std":
            return f"{100 * record[key + '_mean']:.2f}% ± {100 * record[key + '_std']:.2f}"
        value = record[key]
        if kind == "str" or isinstance(value, str):
            return str(value)
        if kind == "int":
            return str(int(value))
        if kind == "g":
            return f"{value:g}"
        if kind == "percent":
            return f"{100 * value:.2f}%"
        if kind == "p":
            return p_value(value)
        return f"{value:.4f}" if isinstance(value, float) else str(value)


def shown(records, columns):
    """``(headers, rows of strings)`` of ``records`` under ``columns``."""
    return [c.header for c in columns], [[c.show(r) for c in columns] for r in records]


def markdown(records, columns):
    headers, rows = shown(records, columns)
    return tabulate(rows, headers=headers, tablefmt="github", disable_numparse=True)


LATEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                 "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\^{}", "±": r"$\pm$", "<": r"$<$",
                 ">": r"$>$"}


def latex_escape(text):
    return "".join(LATEX_SPECIAL.get(c, c) for c in str(text))


def latex(records, columns, caption=None):
    """A booktabs table (``\\usepackage{booktabs}``) in a ``table`` float when ``caption`` is given."""
    headers, rows = shown(records, columns)
    lines = [f"\\begin{{tabular}}{{l{'r' * (len(headers) - 1)}}}", "\\toprule",
             " & ".join(latex_escape(h) for h in headers) + " \\\\", "\\midrule"]
    lines += [" & ".join(latex_escape(c) for c in row) + " \\\\" for row in rows]
    lines += ["\\bottomrule", "\\end{tabular}"]
    body = "\n".join(lines)
    if caption is None:
        return body + "\n"
    return f"\\begin{{table}}[t]\n\\centering\n\\caption{{{latex_escape(caption)}}}\n{body}\n\\end{{table}}\n"


def html(records, columns):
    headers, rows = shown(records, columns)
    return tabulate(rows, headers=headers, tablefmt="html", disable_numparse=True)


def write_text(path, text):
    atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def write_table(out_dir, name, title, records, columns, shown_records=None):
    """``<name>.csv`` (every record, every field), ``<name>.md`` and ``<name>.tex`` (``shown_records``, default
    all, under ``columns``). Returns ``(paths, markdown text)``."""
    os.makedirs(out_dir, exist_ok=True)
    paths = {ext: os.path.join(out_dir, f"{name}.{ext}") for ext in ("csv", "md", "tex")}
    write_csv(paths["csv"], records)
    rows = records if shown_records is None else shown_records
    text = f"### {title}\n\n{markdown(rows, columns)}\n"
    write_text(paths["md"], text)
    write_text(paths["tex"], latex(rows, columns, caption=title))
    return paths, text


def save_figure(fig, path):
    plt = _pyplot()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=130))
    plt.close(fig)
    return path


METHOD_STYLES = {"fgm": ("-", "o"), "pgd": ("-.", "^"), "sign": (":", "v"), "random": ("--", "s"),
                 "average": (":", "v"), "bandwagon": ("-", "D"), "segment": ((0, (5, 1, 1, 1)), "P"), "pga": ("-.", "^")}
"""Line style and marker of each attack method (test-time attacks and poisoning attacks): a model's curves share its
colour, a method its style."""


def draw_curves(ax, curves, baselines=None, log_x=False):
    """Curves ``[{"label", "points": [(x, mean, std, n)], "colour", "method"}]`` on ``ax`` (``method``: an attack
    method's line style, ``METHOD_STYLES``; none: solid): error bars only where a point is the mean of several runs
    (n > 1); ``baselines`` ``{label: y}`` as horizontal dotted lines."""
    plt = _pyplot()
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for curve in curves:
        points = sorted(p for p in curve["points"] if not log_x or p[0] > 0)
        if not points:
            continue
        xs, ys, errs, ns = zip(*points)
        colour = colours[curve.get("colour", 0) % len(colours)]
        style, marker = METHOD_STYLES.get(curve.get("method"), ("-", "o"))
        if max(ns) > 1:
            ax.errorbar(xs, ys, yerr=errs, marker=marker, linestyle=style, capsize=3, color=colour, label=curve["label"])
        else:
            ax.plot(xs, ys, marker=marker, linestyle=style, color=colour, label=curve["label"])
    for k, (label, y) in enumerate((baselines or {}).items()):
        ax.axhline(y, color=("0.35", "0.6")[k % 2], linestyle=":", linewidth=1.2, label=label)
    if log_x:
        ax.set_xscale("log")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)


def sweep_figure(path, title, panels):
    """One PNG with a panel per ``{"xlabel", "ylabel", "curves", "baselines", "log_x"}`` side by side."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(panels), figsize=(5.4 * len(panels), 4.0), squeeze=False)
    for ax, panel in zip(axes[0], panels):
        draw_curves(ax, panel["curves"], panel.get("baselines"), panel.get("log_x", False))
        ax.set_xlabel(panel["xlabel"])
        ax.set_ylabel(panel["ylabel"])
        if panel.get("title"):
            ax.set_title(panel["title"], fontsize=9)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return save_figure(fig, path)


def rank_change_histogram(path, changes, title):
    """The histogram of the rank changes (after - before) of each label of ``changes`` ({label: array}): counts
    for one label, densities for several (models of different test sizes compare)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    several = len(changes) > 1
    limit = max(1.0, float(np.percentile(np.abs(np.concatenate(list(changes.values()))), 99)))
    for label, change in changes.items():
        ax.hist(np.clip(change, -limit, limit), bins=60, alpha=0.5 if several else 0.8, label=label,
                density=several)
    ax.axvline(0, color="black", linewidth=0.8)
    ax.set_xlabel("rank after - rank before (positive: the test item fell)")
    ax.set_ylabel("density" if several else "test items")
    ax.legend(fontsize=8)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return save_figure(fig, path)


def landscape_figure(path, panels, title):
    """Contour plots of training-loss landscapes ``{label: (alphas, betas, losses)}``, one panel each. Labels
    ``X`` and ``X + MG`` (a model with and without Mirror Gradient) share one colour scale, since their losses
    compare; different models, whose losses differ in kind, get one scale each (the MG paper's figure 3)."""
    plt = _pyplot()
    groups = {}
    for label in panels:
        groups.setdefault(label.removesuffix(" + MG"), []).append(label)
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.8), squeeze=False, constrained_layout=True)
    k = 0
    for labels in groups.values():
        low = min(float(np.min(panels[label][2])) for label in labels)
        high = max(float(np.max(panels[label][2])) for label in labels)
        levels = np.linspace(low, high, 21) if high > low else 21
        group_axes = axes[0][k:k + len(labels)]
        for ax, label in zip(group_axes, labels):
            alphas, betas, losses = panels[label]
            contour = ax.contourf(betas, alphas, losses, levels=levels, cmap="viridis")
            ax.contour(betas, alphas, losses, levels=10, colors="white", linewidths=0.5, alpha=0.6)
            ax.plot(0, 0, marker="*", color="red", markersize=9)
            ax.set_title(label, fontsize=9)
            ax.set_xlabel("direction 2")
            ax.set_ylabel("direction 1")
        fig.colorbar(contour, ax=group_axes.tolist(), label="training loss")
        k += len(labels)
    fig.suptitle(title, fontsize=10)
    return save_figure(fig, path)
