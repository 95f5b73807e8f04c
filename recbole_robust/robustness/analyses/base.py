"""What an analysis is: one entry with its settings, its checks, its run and its report section.

An analysis (a module of this package holding ``ANALYSIS = <an Analysis>``) declares

* ``settings``: the schema of its own settings (``config.SETTINGS`` gathers them; their defaults are in
  ``properties/overall.yaml``);
* ``check(config, model)``: what depends on the built model, before training; ``check_data(config,
  train_data)``: what depends on the loaded data;
* ``run(context) -> Result``: the computation on a trained model. ``Result`` is the one result type: the
  records of its table (plain values at full precision, one per cell: the CSV), the columns the Markdown
  and LaTeX tables show, and ``data``, what the report aggregates over checkpoints;
* ``plot(result, path, title)``: one run's figure (or none);
* ``section(report, results)``: the analysis's part of the multi-model report (``summary.py``), from
  ``{label: [Result of each checkpoint]}``.

``runs.py`` runs every enabled analysis and writes each run's files; ``summary.py`` writes the report.
Adding an analysis is adding one module here (and its defaults to ``overall.yaml``).
"""
from dataclasses import dataclass, field

import numpy as np

from recbole_robust.settings import as_list


@dataclass
class Result:
    """What one analysis computed on one trained model."""

    analysis: str
    title: str
    records: list
    columns: list
    data: dict = field(default_factory=dict)
    shown: list = None  # the records the Markdown / LaTeX table shows (default: all)
    files: dict = field(default_factory=dict)


@dataclass
class Context:
    """A trained model and its data, as the analyses see it.

    ``evaluate(tensors=None)`` evaluates the test split with ``tensors`` replacing the model's (seeded, so
    every evaluation draws the same sampled negatives) and returns ``(metrics at full precision, per-user
    metrics)``; ``clean`` is its result without perturbation; ``metric`` the one the figures show."""

    config: object
    trainer: object
    train_data: object
    test_data: object
    evaluate: object
    clean: dict
    clean_users: dict
    metric: str


class Analysis:
    name = ""
    option = "analysis"  # the setting that selects it: --analysis=<name> (or its own, e.g. --attack)
    heading = ""
    settings = {}

    def enabled(self, config):
        return self.name in selected(config)

    def check(self, config, model):
        """Settings that depend on the model, checked before training (one-line errors)."""

    def check_data(self, config, train_data):
        """Settings that depend on the loaded data, checked before the model is built."""

    def run(self, context):
        raise NotImplementedError

    def plot(self, result, path, title):
        """Draw one run's figure at ``path``; False when the analysis has none."""
        return False

    def section(self, report, results):
        raise NotImplementedError


def selected(config):
    """The names ``--analysis`` selects."""
    return [] if config["analysis"] is None else as_list(config["analysis"])


def drop(clean, value):
    """Relative drop ``(clean - value) / clean`` (0 when clean is 0)."""
    return (clean - value) / clean if clean else 0.0


def mean_std(values):
    """``(mean, std, n)`` of a list of numbers (std 0 for one value)."""
    values = np.asarray(values, dtype=float)
    return float(values.mean()), float(values.std()), int(len(values))


def metric_of(config):
    """The metric the tables and figures of the analyses centre on: ``attack_metric``, else ``valid_metric``."""
    return (config["attack_metric"] or config["valid_metric"]).lower()
