"""Attack, analysis and comparison runs on a trained model: the robustness orchestration.

``quick_start`` only trains and evaluates; ``check_robustness_options`` validates every attack and
analysis setting against the built model before anything is written, and ``run_attack``,
``run_analyses`` and ``compare_models`` run them after training (or on ``--checkpoint``).
"""
import os
import time
from logging import getLogger

import numpy as np

from recbole_robust.errors import RecBoleRobustError
from recbole_robust.robustness import analyses
from recbole_robust.robustness.attacks import attack_sweep, attack_terms, evaluate_with
from recbole_robust.robustness.report import write_attack_report, write_landscape_report, write_table_report

ANALYSES = ("noise", "adjust", "landscape")


def attack_methods(attack):
    """``--attack`` value -> methods to run; an adversarial attack is always run with its random control."""
    methods = [attack] if isinstance(attack, str) else list(attack)
    if any(m != "random" for m in methods) and "random" not in methods:
        methods.append("random")
    return methods


def analysis_names(config):
    return [config["analysis"]] if isinstance(config["analysis"], str) else list(config["analysis"] or [])


def check_robustness_options(config, model):
    """Validate ``attack*`` and ``analysis*`` settings for ``model`` (one-line errors), before training."""
    from recbole_robust.config import check_metrics

    check_metrics(config)
    if config["attack"]:
        attack_terms(config, model)
    names = analysis_names(config)
    if "noise" in names:
        analyses.noise_targets(config, model)
    if "adjust" in names:
        analyses.adjust_modality(config, model)


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

    def drop_records(results, label):
        return [{"analysis": label, "metric": m, "clean": float(clean[m]), "mean": float(np.mean(v)),
                 "std": float(np.std(v)), "relative_drop": (clean[m] - np.mean(v)) / clean[m] if clean[m] else 0.0}
                for m, v in results.items()]

    if "noise" in names:
        targets = analyses.noise_targets(config, trainer.model)
        runs = analyses.gaussian_noise(trainer, test_data, targets, config["noise_sigma"], config["noise_repeats"],
                                       seed=config["seed"])
        label = f"N(0, {config['noise_sigma']}^2) on {'+'.join(targets)}, {config['noise_repeats']} runs"
        paths, text = write_table_report(out_dir, "noise", drop_records(runs, label),
                                         ["metric", "clean", "mean", "std", "relative_drop"], f"{title}: {label}")
        out["noise"] = {"runs": runs, "files": paths}
        logger.info("\n" + text)
    if "adjust" in names:
        modality = analyses.adjust_modality(config, trainer.model)
        result, n_changed = analyses.information_adjustment(trainer, test_data, modality, config["adjust_fraction"],
                                                            seed=config["seed"])
        label = f"{modality} features of {n_changed} items ({100 * config['adjust_fraction']:g}%) replaced"
        paths, text = write_table_report(out_dir, "adjust", drop_records({m: [v] for m, v in result.items()}, label),
                                         ["metric", "clean", "mean", "relative_drop"], f"{title}: {label}")
        out["adjust"] = {"result": result, "files": paths}
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


def run_attack(config, trainer, train_data, test_data):
    """Attack the trainer's (best) model for every eps of ``attack_eps``; write CSV, Markdown and PNG."""
    metric = (config["attack_metric"] or config["valid_metric"]).lower()
    eps = config["attack_eps"] if isinstance(config["attack_eps"], list) else [config["attack_eps"]]
    clean, rows = attack_sweep(trainer, train_data, test_data, eps, attack_methods(config["attack"]), seed=config["seed"])
    out_dir = _report_dir(config, "attack_dir", "robustness")
    title = f"{config['model']} on {config['dataset']}: attacks at test time"
    paths, text = write_attack_report(clean, rows, metric, out_dir, title)
    getLogger().info("\n" + text + f"\nreport: {', '.join(paths.values())}")
    return {"clean": clean, "rows": rows, "files": paths}


def compare_models(models, dataset, config_file_list=None, config_dict=None, preset=None):
    """Train each of two models on the same data and split; paired t-test of their per-user test metrics.

    Returns ``(rows, table)``; the table is also logged.
    """
    from recbole_robust.quick_start import prepare_run
    from recbole_robust.robustness.compare import comparison_table, evaluate_per_user, paired_t_test
    from recbole_robust.trainer import load_checkpoint

    if len(models) != 2:
        raise RecBoleRobustError(f"--compare takes two models, got {len(models)}: {models}")
    per_user = []
    for name in models:
        config, _, (train_data, valid_data, test_data), trainer = prepare_run(
            name, dataset, config_file_list, config_dict, preset
        )
        trainer.fit(train_data, valid_data, saved=True, show_progress=config["show_progress"])
        trainer.model.load_state_dict(load_checkpoint(trainer.saved_model_file, config["device"])["state_dict"])
        per_user.append(evaluate_per_user(trainer, test_data)[1])
    rows = paired_t_test(models[0], per_user[0], models[1], per_user[1])
    table = comparison_table(rows, *models)
    getLogger().info(f"{models[1]} vs {models[0]} on {dataset} (paired over {len(next(iter(per_user[0].values())))} "
                     f"test users):\n{table}")
    return rows, table
