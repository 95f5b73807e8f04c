"""Analyses of one trained model: what ``--attack`` and ``--analysis`` run, and the ``valid_attack`` hook.

``check_robustness_options`` validates every enabled analysis against the built model, and
``check_robustness_data`` against the loaded data, before anything is written; ``run_analyses`` runs them
after training (or on ``--checkpoint``) and writes each one's CSV, Markdown, LaTeX and PNG into the run's
report folder; ``attacked_validation`` is the after-validation hook of ``valid_attack``. Runs are launched
by ``quick_start`` and ``pipelines``, never from here.
"""
import os
import time
from logging import getLogger

import torch
from recbole.utils import dict2str, set_color

from recbole_robust.perturb.ascent import attack_perturbations
from recbole_robust.perturb.engine import call_with
from recbole_robust.robustness.analyses import ANALYSES, Context
from recbole_robust.robustness.analyses.base import metric_of
from recbole_robust.robustness.attacks import attack_terms, pgd_settings
from recbole_robust.robustness.compare import evaluate_per_user
from recbole_robust.robustness.report import write_table
from recbole_robust.trainer.checkpoint import rng_state, set_rng_state


def enabled(config):
    """The analyses a run's settings ask for, in report order."""
    return [analysis for analysis in ANALYSES.values() if analysis.enabled(config)]


def check_robustness_options(config, model):
    """Validate the enabled analyses (and ``valid_attack``) for ``model`` (one-line errors), before training."""
    for analysis in enabled(config):
        analysis.check(config, model)
    if config["valid_attack"]:
        attack_terms(config, model)


def check_robustness_data(config, train_data):
    """Validate the enabled analyses against the loaded data (e.g. promotion targets), before training."""
    for analysis in enabled(config):
        analysis.check_data(config, train_data)


def report_dirs(config):
    """Where a run's analyses write: the attacks to ``attack_dir``, the others to ``analysis_dir``; by default
    both to ``<checkpoint_dir>/robustness/<model>-<dataset>-<time>/``."""
    default = os.path.join(config["checkpoint_dir"], "robustness",
                           f"{config['model']}-{config['dataset']}-{time.strftime('%Y%m%d-%H%M%S')}")
    return config["attack_dir"] or default, config["analysis_dir"] or default


def context(config, trainer, train_data, test_data):
    """The ``Context`` the analyses see: evaluation at full precision with per-user metrics, and the clean result."""

    def evaluate(tensors=None):
        return evaluate_per_user(trainer, test_data, tensors)

    clean, clean_users = evaluate()
    return Context(config, trainer, train_data, test_data, evaluate, clean, clean_users, metric_of(config))


def run_analyses(config, trainer, train_data, test_data):
    """Run every enabled analysis on the trainer's model; write each one's files; returns ``{name: Result}``."""
    analyses = enabled(config)
    if not analyses:
        return {}
    ctx = context(config, trainer, train_data, test_data)
    logger = getLogger()
    title = f"{config['model']} on {config['dataset']}"
    attack_dir, analysis_dir = report_dirs(config)
    results = {}
    for analysis in analyses:
        result = analysis.run(ctx)
        out_dir = attack_dir if analysis.option == "attack" else analysis_dir
        result.files, text = write_table(out_dir, analysis.name, f"{title}: {result.title}", result.records,
                                         result.columns, result.shown)
        png = os.path.join(out_dir, f"{analysis.name}.png")
        if analysis.plot(result, png, title):
            result.files["png"] = png
        logger.info("\n" + text + f"\nfiles: {', '.join(result.files.values())}")
        results[analysis.name] = result
    return results


def attacked_validation(trainer, epoch_idx, valid_data, verbose=True):
    """Robustness during training (``valid_attack``), a validation hook of the trainer (attached by
    ``quick_start.prepare_run``): the validation metrics of the current model under the configured attack,
    logged next to the clean ones, in TensorBoard (``Valid_attacked/<metric>``) and kept in
    ``trainer.attacked_valid_results``. The attack's gradient pass draws from the training loader and the
    random number generators; their states are restored, so training goes on as without it.
    """
    config = trainer.config
    method, eps = config["valid_attack"], config["valid_attack_eps"]
    state, loader_state = rng_state(), trainer._train_loader_generator().get_state()
    try:
        terms = attack_terms(config, trainer.model)
        tensors = attack_perturbations(trainer.model, trainer._train_data, terms, eps, method, pgd_settings(config),
                                       seed=config["seed"])
        with torch.no_grad():
            result = call_with(trainer.model, tensors, lambda: trainer.evaluate(valid_data, load_best_model=False))
    finally:
        set_rng_state(state)
        trainer._train_loader_generator().set_state(loader_state)
    trainer.attacked_valid_results[epoch_idx] = result
    for metric, value in result.items():
        trainer.tensorboard.add_scalar(f"Valid_attacked/{metric}", value, epoch_idx)
    if verbose:
        targets = ", ".join("+".join(names) for names, _ in terms)
        trainer.logger.info(set_color("valid result under attack", "blue")
                            + f" ({method}, eps {eps:g} on {targets}): \n" + dict2str(result))
    return result
