"""Attacks and analyses of a trained model: what ``--attack`` and ``--analysis`` compute.

``check_robustness_options`` validates every attack and analysis setting against the built model
before anything is written; ``run_attack`` and ``run_analyses`` run them after training (or on
``--checkpoint``); ``attacked_validation`` is the after-validation hook of ``valid_attack``. Runs
are launched by ``quick_start`` and ``pipelines``, never from here.
"""
import os
import time
from logging import getLogger

import numpy as np
import torch
from recbole.utils import dict2str, set_color

from recbole_robust.robustness import analyses, promotion
from recbole_robust.perturb.ascent import attack_perturbations
from recbole_robust.robustness.attacks import attack_sweep, attack_terms, check_attack, evaluate_with, pgd_settings
from recbole_robust.robustness.report import (
    write_attack_report, write_landscape_report, write_rank_change_report, write_sweep_plot,
    write_table_report,
)
from recbole_robust.perturb.engine import call_with
from recbole_robust.trainer.checkpoint import rng_state, set_rng_state

ANALYSES = ("noise", "adjust", "landscape", "promotion", "rank_change")


def attack_methods(attack):
    """``--attack`` value -> methods to run; an adversarial attack is always run with its random control."""
    methods = [attack] if isinstance(attack, str) else list(attack)
    if any(m != "random" for m in methods) and "random" not in methods:
        methods.append("random")
    return methods


def _eps_list(eps):
    return eps if isinstance(eps, list) else [eps]


def _sweep(xs, runs, metric, clean):
    """One curve: (x, mean, std) of ``metric`` per point, starting at (0, clean)."""
    return [(0.0, float(clean[metric]), 0.0)] + [(float(x), float(np.mean(r[metric])), float(np.std(r[metric])))
                                                 for x, r in zip(xs, runs)]


def analysis_names(config):
    return [config["analysis"]] if isinstance(config["analysis"], str) else list(config["analysis"] or [])


def check_robustness_options(config, model):
    """Validate ``attack*`` and ``analysis*`` settings for ``model`` (one-line errors), before training."""
    if config["attack"]:
        attack_terms(config, model)
        check_attack(attack_methods(config["attack"]), _eps_list(config["attack_eps"]), pgd_settings(config))
    if config["valid_attack"]:
        attack_terms(config, model)
        check_attack([config["valid_attack"]], [config["valid_attack_eps"]], pgd_settings(config))
    names = analysis_names(config)
    if "noise" in names:
        analyses.noise_targets(config, model)
    if "adjust" in names:
        analyses.adjust_modality(config, model)
    if "promotion" in names:
        promotion.content_tensors(model)
        check_attack(["pgd"], _eps_list(config["promotion_eps"]), pgd_settings(config))
    if "rank_change" in names:
        attack_terms(config, model)
        check_attack([rank_change_method(config)], _eps_list(config["attack_eps"]), pgd_settings(config))


def rank_change_method(config):
    """The untargeted attack of ``rank_change``: the first adversarial method of ``attack``, else FGM."""
    return next((m for m in attack_methods(config["attack"] or []) if m != "random"), "fgm")


def _report_dir(config, key, kind):
    return config[key] or os.path.join(
        config["checkpoint_dir"], kind, f"{config['model']}-{config['dataset']}-{time.strftime('%Y%m%d-%H%M%S')}"
    )


def run_analyses(config, trainer, train_data, test_data):
    """The MG paper's analyses named by ``analysis`` (noise, adjust, landscape); CSV, Markdown, PNG."""
    names = analysis_names(config)
    out_dir = _report_dir(config, "analysis_dir", "robustness")
    title = f"{config['model']} on {config['dataset']}"
    logger, out = getLogger(), {"clean": evaluate_with(trainer, test_data)}
    clean = out["clean"]
    metric = (config["attack_metric"] or config["valid_metric"]).lower()

    def drop_records(results, label):
        return [{"analysis": label, "metric": m, "clean": float(clean[m]), "mean": float(np.mean(v)),
                 "std": float(np.std(v)), "relative_drop": (clean[m] - np.mean(v)) / clean[m] if clean[m] else 0.0}
                for m, v in results.items()]

    if "noise" in names:
        targets = analyses.noise_targets(config, trainer.model)
        sigmas, unit = _eps_list(config["noise_sigma"]), " x scale" if config["noise_relative"] else ""
        runs = [analyses.gaussian_noise(trainer, test_data, targets, sigma, config["noise_repeats"],
                                        seed=config["seed"], relative=config["noise_relative"]) for sigma in sigmas]
        label = f"N(0, sigma^2) on {'+'.join(targets)}, {config['noise_repeats']} draws"
        records = [{"sigma": f"{sigma:g}{unit}", **record} for sigma, r in zip(sigmas, runs)
                   for record in drop_records(r, label)]
        paths, text = write_table_report(out_dir, "noise", records,
                                         ["sigma", "metric", "clean", "mean", "std", "relative_drop"], f"{title}: {label}")
        paths["png"] = write_sweep_plot(out_dir, "noise", {config["model"]: _sweep(sigmas, runs, metric, clean)},
                                        f"sigma{unit}", metric, f"{title}: {label}", log_x=len(sigmas) > 2)
        out["noise"] = {"sigmas": sigmas, "runs": runs, "files": paths}
        logger.info("\n" + text)
    if "adjust" in names:
        modality = analyses.adjust_modality(config, trainer.model)
        fractions, results = _eps_list(config["adjust_fraction"]), []
        for fraction in fractions:
            draws = [analyses.information_adjustment(trainer, test_data, modality, fraction, seed=config["seed"] + r)[0]
                     for r in range(config["adjust_repeats"])]
            results.append({m: [float(d[m]) for d in draws] for m in draws[0]})
        label = f"{modality} features of a share of the items replaced, {config['adjust_repeats']} draws"
        records = [{"fraction": fraction, **record} for fraction, r in zip(fractions, results)
                   for record in drop_records(r, label)]
        paths, text = write_table_report(out_dir, "adjust", records,
                                         ["fraction", "metric", "clean", "mean", "std", "relative_drop"],
                                         f"{title}: {label}")
        paths["png"] = write_sweep_plot(out_dir, "adjust", {config["model"]: _sweep(fractions, results, metric, clean)},
                                        "share of items adjusted", metric, f"{title}: {label}")
        out["adjust"] = {"fractions": fractions, "results": results, "files": paths}
        logger.info("\n" + text)
    if "promotion" in names:
        topk = config["promotion_topk"]
        targets, rows = promotion.promotion(trainer, train_data, config["promotion_items"],
                                            _eps_list(config["promotion_eps"]), topk, config["attack_steps"],
                                            config["attack_step_size"], seed=config["seed"])
        label = f"promotion of {len(targets)} items by their content features"
        columns = ["method", "eps", f"hit_ratio@{topk}", "mean_rank", "median_rank"]
        paths, text = write_table_report(out_dir, "promotion", rows, columns, f"{title}: {label}")
        curves = {method: [(r["eps"], r[f"hit_ratio@{topk}"], 0.0) for r in rows if r["method"] in ("clean", method)]
                  for method in ("pgd", "random")}
        paths["png"] = write_sweep_plot(out_dir, "promotion", curves, "eps (L2 norm per target item)",
                                        f"hit_ratio@{topk}", f"{title}: {label}")
        out["promotion"] = {"targets": targets.tolist(), "rows": rows, "files": paths}
        logger.info("\n" + text)
    if "rank_change" in names:
        method, eps = rank_change_method(config), max(_eps_list(config["attack_eps"]))
        before, after = promotion.rank_change(trainer, train_data, test_data, method, eps, seed=config["seed"],
                                              pgd=pgd_settings(config))
        label = f"rank change of the clean test items under {method}, eps {eps:g}"
        paths, text = write_rank_change_report(out_dir, before.numpy(), after.numpy(), f"{title}: {label}")
        out["rank_change"] = {"before": before, "after": after, "files": paths}
        logger.info("\n" + text)
    if "landscape" in names:
        batches = [b.to(config["device"]) for _, b in zip(range(config["landscape_batches"]), train_data)]
        alphas, betas, losses = analyses.loss_landscape(
            trainer.model, batches, config["landscape_span"], config["landscape_points"],
            config["landscape_normalize"], seed=config["seed"])
        paths = write_landscape_report(out_dir, alphas, betas, losses, f"{title}: training loss landscape")
        out["landscape"] = {"alphas": alphas, "betas": betas, "losses": losses, "files": paths}
        logger.info(f"loss landscape: {paths['png']}")
    return out


def run_attack(config, trainer, train_data, test_data, evaluate=None):
    """Attack the trainer's (best) model for every eps of ``attack_eps``; write CSV, Markdown and PNG.
    ``evaluate`` replaces ``evaluate_with`` (``attack_sweep``)."""
    metric = (config["attack_metric"] or config["valid_metric"]).lower()
    eps = _eps_list(config["attack_eps"])
    clean, rows = attack_sweep(trainer, train_data, test_data, eps, attack_methods(config["attack"]), seed=config["seed"],
                               pgd=pgd_settings(config), evaluate=evaluate)
    out_dir = _report_dir(config, "attack_dir", "robustness")
    title = f"{config['model']} on {config['dataset']}: attacks at test time"
    paths, text = write_attack_report(clean, rows, metric, out_dir, title)
    getLogger().info("\n" + text + f"\nreport: {', '.join(paths.values())}")
    return {"clean": clean, "rows": rows, "files": paths}


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
