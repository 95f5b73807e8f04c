"""Analyses that sweep one perturbation size and repeat random draws at each (noise, information adjustment):
the records, figures and report section they share."""
import numpy as np

from recbole_robust.robustness.analyses.base import Analysis, Result, drop, mean_std
from recbole_robust.robustness.report import Column, sweep_figure


class SweepAnalysis(Analysis):
    """``sweep(context) -> (xs, draws, title, extra)``: for each x of the sweep, ``{metric: [value of each
    draw]}``; ``extra`` goes into the result's data."""

    x_name = "x"

    def sweep(self, context):
        raise NotImplementedError

    def x_label(self, config):
        return self.x_name

    def log_x(self, xs):
        return False

    def run(self, context):
        xs, draws, title, extra = self.sweep(context)
        records = []
        for x, by_metric in zip(xs, draws):
            for metric, values in by_metric.items():
                mean, std, n = mean_std(values)
                clean = float(context.clean[metric])
                records.append({self.x_name: x, "metric": metric, "clean": clean, "perturbed_mean": mean,
                                "perturbed_std": std, "draws": n, "relative_drop": drop(clean, mean)})
        columns = [Column(self.x_name, kind="g"), Column("metric", kind="str"), Column("clean"),
                   Column("perturbed", "perturbed", "mean_std"), Column("draws", kind="int"),
                   Column("relative drop", "relative_drop", "percent")]
        data = {"xs": list(xs), "draws": draws, "clean": dict(context.clean), "x_label": self.x_label(context.config),
                "metric": context.metric, **extra}
        return Result(self.name, title, records, columns, data)

    def plot(self, result, path, title):
        metric = result.data["metric"]
        points = [(x, *mean_std(d[metric])) for x, d in zip(result.data["xs"], result.data["draws"])]
        panel = {"xlabel": result.data["x_label"], "ylabel": metric, "log_x": self.log_x(result.data["xs"]),
                 "curves": [{"label": "perturbed (mean ± std over draws)", "points": points}],
                 "baselines": {"clean": result.data["clean"][metric]}}
        sweep_figure(path, f"{title}: {result.title}", [panel])
        return True

    def section(self, report, results):
        metric = report.metric
        first = next(iter(results.values()))[0]
        x_label = first.data["x_label"]
        records, absolute, relative = [], [], []
        for k, (label, runs) in enumerate(results.items()):
            clean = [r.data["clean"][metric] for r in runs]
            abs_points, drop_points = [(0.0, *mean_std(clean))], [(0.0, 0.0, 0.0, len(runs))]
            for i, x in enumerate(runs[0].data["xs"]):
                for m in runs[0].data["draws"][i]:
                    cleans = [r.data["clean"][m] for r in runs]
                    means = [float(np.mean(r.data["draws"][i][m])) for r in runs]  # each run's mean over its draws
                    drops = [drop(c, v) for c, v in zip(cleans, means)]
                    (clean_mean, clean_std, n), (mean, std, _), (drop_mean, drop_std, _) = (
                        mean_std(cleans), mean_std(means), mean_std(drops))
                    records.append({"model": label, self.x_name: x, "metric": m, "clean_mean": clean_mean,
                                    "clean_std": clean_std, "perturbed_mean": mean, "perturbed_std": std,
                                    "relative_drop_mean": drop_mean, "relative_drop_std": drop_std, "n": n})
                    if m == metric:
                        abs_points.append((x, mean, std, n))
                        drop_points.append((x, drop_mean, drop_std, n))
            absolute.append({"label": label, "points": abs_points, "colour": k})
            relative.append({"label": label, "points": [(x, 100 * m, 100 * s, n) for x, m, s, n in drop_points],
                             "colour": k})
        log_x = self.log_x(first.data["xs"])
        path = sweep_figure(report.path(self.name), f"{report.dataset}: {self.heading} ({first.title.split(',')[0]})", [
            {"xlabel": x_label, "ylabel": metric, "curves": absolute, "baselines": report.baselines(metric),
             "log_x": log_x, "title": f"{metric} (mean ± std over checkpoints)"},
            {"xlabel": x_label, "ylabel": f"relative drop of {metric} (%)", "curves": relative, "log_x": log_x,
             "title": "relative drop (each checkpoint against its own clean value)"}])
        report.heading(f"{self.heading} ({metric})")
        report.text(first.title + ".")
        report.figure(path, f"{metric} and its relative drop against {x_label}, one curve per model")
        columns = [Column("model", kind="str"), Column(x_label, self.x_name, "g"), Column("clean", "clean", "mean_std"),
                   Column("perturbed", "perturbed", "mean_std"), Column("relative drop", "relative_drop", "percent_std"),
                   Column("n", kind="int")]
        report.table(self.name, f"{self.heading}: {metric}", records, columns,
                     [r for r in records if r["metric"] == metric])
