"""The page of a robustness report over several models (``recbole-robust report``): what goes into a paper.

``pipelines.robustness_report`` evaluates groups of checkpoints (one label per model, one checkpoint per seed)
on the test set, runs every enabled analysis on each (``runs.py``; each checkpoint's own files go to
``<report_dir>/runs/<label>-<i>/``), and hands the results to ``write_report`` here. The report folder gets
``report.md`` and ``report.html`` (self-contained: tables and images inline) with

* the settings: command, dataset, preset, evaluation protocol and split sizes, seeds and the number of
  checkpoints behind each mean, what eps means, the PGD steps and step size, noise units, package versions,
  git commit where known, threads, date;
* clean test metrics (mean ± std over each label's checkpoints, with n), beside the chance (RecBole's
  ``Random``) and popularity (``Pop``) baselines of the same split;
* paired t-tests (two-sided, over test users; each user's metric averaged over the label's checkpoints) of
  every label against the first;
* one section per analysis (``analyses/``: its figure, its table);

and one CSV (one value per cell: means, stds and n in columns of their own) and one LaTeX (booktabs) table
per table, ``tables.tex`` with all of them, and the PNGs. Numbers are computed from unrounded metrics
(``compare.evaluate_per_user``) and rounded only where they are shown.
"""
import base64
import html
import os

from recbole_robust.robustness.analyses import ANALYSES
from recbole_robust.robustness.analyses.attack import paired_p, user_mean
from recbole_robust.robustness.analyses.base import mean_std
from recbole_robust.robustness.report import Column, latex, markdown, write_text
from recbole_robust.robustness.report import html as html_table
from recbole_robust.utils import write_csv

BASELINES = {"Random": "chance (Random)", "Pop": "popularity (Pop)"}


class Report:
    """The report being written: blocks for the Markdown and HTML pages, tables written as CSV and LaTeX."""

    def __init__(self, out_dir, dataset, metric, baselines):
        self.out_dir, self.dataset, self.metric = out_dir, dataset, metric
        self._baselines = baselines  # {baseline label: [{metric: value} per checkpoint]}
        self.blocks, self.latex = [], []

    def heading(self, text, level=2):
        self.blocks.append(("h", level, text))

    def text(self, text):
        self.blocks.append(("p", text))

    def path(self, name):
        return os.path.join(self.out_dir, f"{name}.png")

    def figure(self, path, caption):
        self.blocks.append(("img", path, caption))

    def table(self, name, title, records, columns, shown_records=None):
        """``records`` (full precision, one value per cell) as ``<name>.csv``; ``shown_records`` (default all)
        under ``columns`` in the page and as ``<name>.tex``."""
        rows = records if shown_records is None else shown_records
        write_csv(os.path.join(self.out_dir, f"{name}.csv"), records)
        tex = latex(rows, columns, caption=f"{self.dataset}: {title}")
        write_text(os.path.join(self.out_dir, f"{name}.tex"), tex)
        self.latex.append(tex)
        self.blocks.append(("table", rows, columns))

    def baselines(self, metric):
        """``{label: mean of metric}`` of the chance and popularity baselines, for the figures."""
        return {BASELINES.get(name, name): mean_std([r[metric] for r in runs])[0]
                for name, runs in self._baselines.items() if runs and metric in runs[0]}

    def markdown(self):
        out = []
        for block in self.blocks:
            if block[0] == "h":
                out.append("#" * block[1] + " " + block[2])
            elif block[0] == "p":
                out.append(block[1])
            elif block[0] == "table":
                out.append(markdown(block[1], block[2]))
            else:
                out.append(f"![{block[2]}]({os.path.relpath(block[1], self.out_dir)})")
        return "\n\n".join(out) + "\n"

    def html(self, title):
        out = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title><style>"
               "body{font-family:sans-serif;max-width:1150px;margin:auto;padding:1em;color:#222}"
               "table{border-collapse:collapse;margin:0.5em 0 1.5em}td,th{border:1px solid #ccc;padding:3px 8px;"
               "text-align:right}td:first-child,th:first-child{text-align:left}th{background:#f3f3f3}"
               "img{max-width:100%}figcaption{color:#555;font-size:90%}</style></head><body>"]
        for block in self.blocks:
            if block[0] == "h":
                out.append(f"<h{block[1]}>{html.escape(block[2])}</h{block[1]}>")
            elif block[0] == "p":
                out.append(f"<p>{html.escape(block[1])}</p>")
            elif block[0] == "table":
                out.append(html_table(block[1], block[2]))
            else:
                with open(block[1], "rb") as f:
                    data = base64.b64encode(f.read()).decode()
                out.append(f"<figure><img src='data:image/png;base64,{data}' alt='{html.escape(block[2])}'>"
                           f"<figcaption>{html.escape(block[2])}</figcaption></figure>")
        return "".join(out) + "</body></html>\n"


def settings_records(settings, results):
    """The settings section's rows: what the run was, for a reader who wants to repeat it."""
    rows = list(settings.items())
    rows += [(f"checkpoints of {label} (n)", f"{len(runs)}: seeds {', '.join(str(r['seed']) for r in runs)}")
             for label, runs in results.items()]
    return [{"setting": key, "value": str(value)} for key, value in rows]


def write_report(results, dataset, out_dir, settings, baselines):
    """Write the report of ``results`` (``{label: [run of each checkpoint]}``; a run holds ``config``, ``clean``,
    ``per_user``, ``analyses`` and ``seed``) into ``out_dir``; returns the paths of the pages."""
    os.makedirs(out_dir, exist_ok=True)
    first = next(iter(results.values()))[0]["config"]
    metric = (first["attack_metric"] or first["valid_metric"]).lower()
    labels = list(results)
    title = f"Robustness report: {', '.join(labels)} on {dataset}"
    report = Report(out_dir, dataset, metric, baselines)
    report.heading(title, 1)

    report.heading("Settings")
    report.table("settings", "settings of the report", settings_records(settings, results),
                 [Column("setting", kind="str"), Column("value", kind="str")])

    report.heading("Clean test metrics")
    report.text("Mean ± std over each model's checkpoints (n of them); the chance and popularity baselines are "
                "RecBole's Random and Pop models on the same split, one per seed.")
    metrics = list(first_run(results)["clean"])
    records = []
    for label, runs in [*results.items(), *[(BASELINES[name], runs) for name, runs in baselines.items()]]:
        record = {"model": label, "n": len(runs)}
        for m in metrics:
            record[f"{m}_mean"], record[f"{m}_std"], _ = mean_std([r["clean"][m] if "clean" in r else r[m]
                                                                  for r in runs])
        records.append(record)
    report.table("clean", "clean test metrics", records,
                 [Column("model", kind="str"), *[Column(m, m, "mean_std") for m in metrics], Column("n", kind="int")])

    if len(labels) > 1:
        report.heading("Paired t-tests against " + labels[0])
        base = user_mean([r["per_user"] for r in results[labels[0]]])
        records = []
        for label in labels[1:]:
            other = user_mean([r["per_user"] for r in results[label]])
            if base is None or other is None or len(next(iter(other.values()))) != len(next(iter(base.values()))):
                report.text(f"{label}: evaluated on other test users than {labels[0]}; no paired test.")
                continue
            for m in base:
                t, p = paired_p(base[m], other[m])
                records.append({"model": label, "metric": m, "baseline_mean": float(base[m].mean()),
                                "model_mean": float(other[m].mean()),
                                "gain": (other[m].mean() - base[m].mean()) / base[m].mean() if base[m].mean() else 0.0,
                                "t": t, "p": p, "users": len(base[m])})
        report.table("t_tests", f"paired t-tests against {labels[0]}", records, [
            Column("model", kind="str"), Column("metric", kind="str"), Column(labels[0], "baseline_mean"),
            Column("model's", "model_mean"), Column("gain", kind="percent"), Column("t"), Column("p", kind="p"),
            Column("users", kind="int")])

    for name, analysis in ANALYSES.items():
        if name in first_run(results)["analyses"]:
            analysis.section(report, {label: [r["analyses"][name] for r in runs] for label, runs in results.items()})

    paths = {"md": os.path.join(out_dir, "report.md"), "html": os.path.join(out_dir, "report.html"),
             "tex": os.path.join(out_dir, "tables.tex")}
    write_text(paths["md"], report.markdown())
    write_text(paths["html"], report.html(title))
    write_text(paths["tex"], "% booktabs tables of the report (\\usepackage{booktabs})\n\n" + "\n".join(report.latex))
    return paths


def first_run(results):
    return next(iter(results.values()))[0]
