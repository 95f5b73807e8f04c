"""The page of a robustness report for several models (``--robustness_report``): what a user pastes into an appendix.

``pipelines.robustness_report`` evaluates groups of checkpoints (``LABEL=a.pth,b.pth``: one label per
model, one checkpoint per seed) on the test set, puts each through the run's ``attack`` and ``analysis``
settings (``runs.py``; each run's own files go to ``<report_dir>/runs/<label>-<i>/``), and hands the
results to ``write_report`` here. The report folder gets:

* ``report.md`` and ``report.html`` (self-contained: tables and images inline) with
  - clean test metrics, mean +- std over each label's checkpoints;
  - paired t-tests (scipy, two-sided, over test users; each user's metric averaged over the label's
    checkpoints) of every label against the first;
  - for each attack method and target: the metric's relative drop against eps, one curve per label (mean +-
    std over checkpoints, PNG: labels with different clean levels compare on one scale), and a table of drops
    with the paired t-test of clean vs attacked across users;
  - the noise and adjustment sweeps (relative drop, as the attacks), the promotion table and curve, the
    rank-change summary and histogram, and the loss landscapes, where the settings compute them;
* the PNGs and one CSV per table.

Every checkpoint is read with ``weights_only=True``; the model of a checkpoint is the name stored in it
(checked against the registry, as any ``--model``) and it is evaluated with the seed it was trained with
(an integer: with a random split, the seed chooses the test items); the dataset, preset and every other
setting are the command line's, and no path is ever taken from a checkpoint.
"""
import base64
import html
import os
import time
from pathlib import Path

import numpy as np
from scipy import stats
from tabulate import tabulate

from recbole_robust.robustness.compare import paired_t_test
from recbole_robust.robustness.report import drop, rank_change_histogram, write_sweep_plot
from recbole_robust.utils import atomic_write, write_csv


def _mean_std(values):
    values = np.asarray(values, dtype=float)
    return f"{values.mean():.4f} ± {values.std():.4f}"


def _percent(drops):
    """Relative drops in % (one per seed) as a table cell: mean ± std."""
    return f"{np.mean(drops):.2f}% ± {np.std(drops):.2f}"


class Page:
    """Blocks rendered to Markdown (images by relative path) and to self-contained HTML (images inline)."""

    def __init__(self, out_dir):
        self.out_dir, self.blocks = out_dir, []

    def heading(self, text, level=2):
        self.blocks.append(("h", level, text))

    def text(self, text):
        self.blocks.append(("p", text))

    def table(self, headers, rows, name=None):
        self.blocks.append(("table", headers, rows))
        if name:
            write_csv(os.path.join(self.out_dir, f"{name}.csv"), [dict(zip(headers, row)) for row in rows])

    def image(self, path, caption):
        self.blocks.append(("img", path, caption))

    def markdown(self):
        out = []
        for block in self.blocks:
            if block[0] == "h":
                out.append("#" * block[1] + " " + block[2])
            elif block[0] == "p":
                out.append(block[1])
            elif block[0] == "table":
                out.append(tabulate(block[2], headers=block[1], tablefmt="github", floatfmt=".4f"))
            else:
                out.append(f"![{block[2]}]({os.path.relpath(block[1], self.out_dir)})")
        return "\n\n".join(out) + "\n"

    def html(self, title):
        out = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title><style>"
               "body{font-family:sans-serif;max-width:1100px;margin:auto;padding:1em}"
               "table{border-collapse:collapse;margin:0.5em 0}td,th{border:1px solid #ccc;padding:3px 8px;"
               "text-align:right}th{background:#f3f3f3}img{max-width:100%}</style></head><body>"]
        for block in self.blocks:
            if block[0] == "h":
                out.append(f"<h{block[1]}>{html.escape(block[2])}</h{block[1]}>")
            elif block[0] == "p":
                out.append(f"<p>{html.escape(block[1])}</p>")
            elif block[0] == "table":
                out.append(tabulate(block[2], headers=block[1], tablefmt="html", floatfmt=".4f"))
            else:
                with open(block[1], "rb") as f:
                    data = base64.b64encode(f.read()).decode()
                out.append(f"<figure><img src='data:image/png;base64,{data}' alt='{html.escape(block[2])}'>"
                           f"<figcaption>{html.escape(block[2])}</figcaption></figure>")
        return "".join(out) + "</body></html>\n"


def write_report(results, dataset, out_dir, checkpoints):
    page = Page(out_dir)
    first_config = next(iter(results.values()))[0]["config"]
    metric = (first_config["attack_metric"] or first_config["valid_metric"]).lower()
    labels = list(results)
    title = f"Robustness report: {', '.join(labels)} on {dataset}"
    page.heading(title, 1)
    page.text("Checkpoints: " + "; ".join(f"{label}: {', '.join(os.path.basename(p) for p in paths)}"
                                           for label, paths in checkpoints.items())
              + f". Mean ± std over each label's checkpoints; written {time.strftime('%Y-%m-%d %H:%M')}.")

    page.heading("Clean test metrics")
    metrics = list(results[labels[0]][0]["clean"])
    page.table(["model"] + metrics, [[label] + [_mean_std([r["clean"][m] for r in runs]) for m in metrics]
                                     for label, runs in results.items()], "clean")

    if len(labels) > 1:
        page.heading("Paired t-tests against " + labels[0])
        base = user_mean([r["per_user"] for r in results[labels[0]]])
        rows = []
        for label in labels[1:]:
            other = user_mean([r["per_user"] for r in results[label]])
            if base is None or other is None or len(next(iter(other.values()))) != len(next(iter(base.values()))):
                page.text(f"{label}: evaluated on other test users than {labels[0]}; no paired test.")
                continue
            for r in paired_t_test(labels[0], base, label, other):
                rows.append([label, r["metric"], r[labels[0]], r[label], f"{100 * r['gain']:+.2f}%", r["t"], r["p"]])
        page.table(["model", "metric", labels[0], "model's", "gain", "t", "p"], rows, "t_tests")

    if "attack" in results[labels[0]][0]:
        _attack_sections(page, results, metric, out_dir)
    analyses = results[labels[0]][0].get("analysis", {})
    for name, xs_key, runs_key, xlabel in (("noise", "sigmas", "runs", "sigma"),
                                           ("adjust", "fractions", "results", "share of items adjusted")):
        if name in analyses:
            _sweep_section(page, results, name, xs_key, runs_key, xlabel, metric, out_dir)
    if "promotion" in analyses:
        _promotion_section(page, results, out_dir)
    if "rank_change" in analyses:
        _rank_change_section(page, results, out_dir)
    if "landscape" in analyses:
        page.heading("Loss landscapes (first checkpoint of each model)")
        for label, runs in results.items():
            page.image(runs[0]["analysis"]["landscape"]["files"]["png"], f"{label}: training loss landscape")

    os.makedirs(out_dir, exist_ok=True)
    paths = {"md": os.path.join(out_dir, "report.md"), "html": os.path.join(out_dir, "report.html")}
    atomic_write(paths["md"], lambda tmp: Path(tmp).write_text(page.markdown(), encoding="utf-8"))
    atomic_write(paths["html"], lambda tmp: Path(tmp).write_text(page.html(title), encoding="utf-8"))
    return paths


def user_mean(per_user):
    """Each user's metrics averaged over runs (a list of ``{metric: array over users}``); None when the runs
    evaluated different numbers of users (no paired test is possible then)."""
    if len({len(next(iter(p.values()))) for p in per_user}) != 1:
        return None
    return {m: np.mean([p[m] for p in per_user], axis=0) for m in per_user[0]}


def _attack_sections(page, results, metric, out_dir):
    rows_of = {label: [r["attack"]["rows"] for r in runs] for label, runs in results.items()}
    first = next(iter(rows_of.values()))[0]
    keys = list(dict.fromkeys((r["target"], r["method"]) for r in first))
    page.heading(f"Attacks at test time ({metric})")
    table = []
    for target, method in keys:
        curves = {}
        for label, runs in results.items():
            clean = [r["clean"][metric] for r in runs]
            points = [(0.0, 0.0, 0.0)]
            eps_list = sorted({r["eps"] for r in rows_of[label][0] if (r["target"], r["method"]) == (target, method)})
            for eps in eps_list:
                attacked = [next(x for x in rows if (x["target"], x["method"], x["eps"]) == (target, method, eps))
                            for rows in rows_of[label]]
                values = [a[metric] for a in attacked]
                drops = 100 * np.array([drop(c, v) for c, v in zip(clean, values)])  # %, one per seed
                points.append((eps, float(drops.mean()), float(drops.std())))
                clean_users = user_mean([r["per_user"] for r in runs])
                attacked_users = user_mean([a["per_user"] for a in attacked])
                if clean_users is None or attacked_users is None:
                    t, p = float("nan"), float("nan")
                elif np.any(clean_users[metric] != attacked_users[metric]):
                    t, p = stats.ttest_rel(clean_users[metric], attacked_users[metric])
                else:
                    t, p = 0.0, 1.0
                table.append([label, method, target, eps, float(np.mean(clean)), _mean_std(values),
                              _percent(drops), float(t), float(p)])
            curves[label] = points
        path = write_sweep_plot(out_dir, f"attack-{method}-{target.replace('+', '_')}", curves, "eps",
                                f"relative drop of {metric} (%)", f"{method} on {target}")
        page.image(path, f"relative drop of {metric} under {method} on {target}, mean and std over seeds, one curve "
                         "per model")
    page.table(["model", "attack", "target", "eps", "clean", "attacked", "relative drop", "t (clean vs attacked)", "p"],
               table, "attacks")


def _sweep_section(page, results, name, xs_key, runs_key, xlabel, metric, out_dir):
    heading = {"noise": "Gaussian noise on the embeddings", "adjust": "Information adjustment"}[name] + f" ({metric})"
    page.heading(heading)
    curves, table = {}, []
    for label, runs in results.items():
        analysis = [r["analysis"][name] for r in runs]
        clean = [r["analysis"]["clean"][metric] for r in runs]
        points = [(0.0, 0.0, 0.0)]
        for k, x in enumerate(analysis[0][xs_key]):
            means = [np.mean(a[runs_key][k][metric]) for a in analysis]
            drops = 100 * np.array([drop(c, m) for c, m in zip(clean, means)])  # %, one per seed
            points.append((float(x), float(drops.mean()), float(drops.std())))
            table.append([label, x, float(np.mean(clean)), _mean_std(means), _percent(drops)])
        curves[label] = points
    relative = name == "noise" and next(iter(results.values()))[0]["config"]["noise_relative"]
    xlabel = f"{xlabel} (x each tensor's scale)" if relative else xlabel
    path = write_sweep_plot(out_dir, name, curves, xlabel, f"relative drop of {metric} (%)", heading,
                            log_x=name == "noise")
    page.image(path, f"relative drop of {metric} against {xlabel}, mean and std over seeds, one curve per model")
    page.table(["model", xlabel, "clean", name, "relative drop"], table, name)


def _promotion_section(page, results, out_dir):
    topk = next(iter(results.values()))[0]["config"]["promotion_topk"]
    hit = f"hit_ratio@{topk}"
    page.heading(f"Item promotion by content features ({hit} of the target items)")
    curves, table = {}, []
    for label, runs in results.items():
        rows = [r["analysis"]["promotion"]["rows"] for r in runs]
        for method, eps in dict.fromkeys((x["method"], x["eps"]) for x in rows[0]):
            picked = [next(x for x in rs if (x["method"], x["eps"]) == (method, eps)) for rs in rows]
            table.append([label, method, eps, _mean_std([p[hit] for p in picked]),
                          _mean_std([p["mean_rank"] for p in picked]), _mean_std([p["median_rank"] for p in picked])])
            if method != "random":
                curves.setdefault(label, []).append(
                    (eps, float(np.mean([p[hit] for p in picked])), float(np.std([p[hit] for p in picked]))))
    path = write_sweep_plot(out_dir, "promotion", curves, "eps (L2 norm per target item)", hit,
                            "promotion of the target items")
    page.image(path, f"targets' {hit} against eps, one curve per model")
    page.table(["model", "method", "eps", hit, "mean rank", "median rank"], table, "promotion")


def _rank_change_section(page, results, out_dir):
    page.heading("Rank change of the clean test items under the untargeted attack")
    table, pooled = [], {}
    for label, runs in results.items():
        changes = []
        for r in runs:
            before, after = (r["analysis"]["rank_change"][k].numpy() for k in ("before", "after"))
            keep = ~(np.isnan(before) | np.isnan(after))
            changes.append(after[keep] - before[keep])
        table.append([label, _mean_std([c.mean() for c in changes]), _mean_std([np.median(c) for c in changes]),
                      _mean_std([(c > 10).mean() for c in changes]), _mean_std([(c < 0).mean() for c in changes])])
        pooled[label] = np.concatenate(changes)
    path = os.path.join(out_dir, "rank_change.png")
    rank_change_histogram(path, pooled)
    page.image(path, "distribution of the rank changes, one histogram per model")
    page.table(["model", "mean change", "median change", "share that fell > 10 places", "share that rose"], table,
               "rank_change")
