"""The one training pipeline: ``run_recbole_robust()``, used by the CLI, by Python callers and by tuning.

It follows RecBole's ``run_recbole`` step by step (Config, seed, dataset, dataloaders, model,
trainer, fit, evaluate) with RecBole's own functions, and adds: plugin model and dataset lookup with
one-line errors, evaluation presets, the plugin trainers (adversarial stages, safe checkpoints,
resume, pre-trained initialisation), attacks at test time, and a logger that starts only once the
input has been validated, so bad input leaves nothing on disk.
"""
import os
import sys
import time
from logging import getLogger

from recbole.config import Config
from recbole.data import create_dataset, data_preparation
from recbole.utils import init_logger, init_seed, set_color
from tabulate import tabulate

from recbole_robust import resources
from recbole_robust.data.prepare import check_dataset_exists
from recbole_robust.errors import RecBoleRobustError
from recbole_robust.registry import get_model, get_trainer
from recbole_robust.trainer import init_from_checkpoint, load_checkpoint
from recbole_robust.trainer.trainer import check_training_options


def make_config(model, dataset, config_file_list=None, config_dict=None, preset=None):
    """RecBole ``Config`` for a plugin or RecBole model; names and files are checked first.

    ``preset`` names an evaluation protocol (``properties/presets/<name>.yaml``); it is read before
    the user's config files, so anything the user sets wins.
    """
    if not model:
        raise RecBoleRobustError("no model given (use --model=<name>)")
    if not dataset:
        raise RecBoleRobustError("no dataset given (use --dataset=<name>)")
    get_model(model)
    files = list(config_file_list or [])
    for path in files:
        if not os.path.isfile(path):
            raise RecBoleRobustError(f"config file {path} not found")
    if preset:
        preset_file = resources.preset_file(preset)
        if preset_file is None:
            raise RecBoleRobustError(f"unknown preset '{preset}'; presets: {', '.join(resources.preset_names())}")
        files.insert(0, str(preset_file))
    config = Config(model=model, dataset=dataset, config_file_list=files or None, config_dict=config_dict)
    check_dataset_exists(config)
    return config


def load_data(config):
    """RecBole dataset and train/valid/test dataloaders of ``config`` (seeded as RecBole does)."""
    init_seed(config["seed"], config["reproducibility"])
    dataset = create_dataset(config)
    train_data, valid_data, test_data = data_preparation(config, dataset)
    return dataset, train_data, valid_data, test_data


def build_model(config, train_data):
    init_seed(config["seed"] + config["local_rank"], config["reproducibility"])
    return get_model(config["model"])(config, train_data._dataset).to(config["device"])


def result_table(best_valid_result, test_result):
    """The metrics of a run as a text table: one row per metric, best-valid and test columns."""
    metrics = list(test_result or best_valid_result or {})
    rows = [
        [m, (best_valid_result or {}).get(m, ""), (test_result or {}).get(m, "")]
        for m in metrics
    ]
    return tabulate(rows, headers=["metric", "best valid", "test"], floatfmt=".4f", tablefmt="github")


def attack_methods(attack):
    """``--attack`` value -> methods to run; an adversarial attack is always run with its random control."""
    methods = [attack] if isinstance(attack, str) else list(attack)
    if any(m != "random" for m in methods) and "random" not in methods:
        methods.append("random")
    return methods


def prepare_run(model, dataset, config_file_list=None, config_dict=None, preset=None, resume=None,
                pretrained=None, checkpoint=None):
    """Everything a run needs, validated before the logger writes anything.

    Returns ``(config, dataset, (train, valid, test), trainer)``.
    """
    config = make_config(model, dataset, config_file_list, config_dict, preset)
    for path in (resume, checkpoint):
        if path:
            load_checkpoint(path, model=config["model"])  # fail before anything is written
    dataset, train_data, valid_data, test_data = load_data(config)
    model = build_model(config, train_data)
    trainer_class = get_trainer(config["MODEL_TYPE"], config["model"])
    check_training_options(trainer_class, config, model)  # invalid adversarial / MG settings fail here
    if config["attack"]:
        from recbole_robust.robustness.attacks import attack_terms

        attack_terms(config, model)
    if pretrained:
        shared, missing = init_from_checkpoint(model, pretrained, config["device"])

    init_logger(config)
    logger = getLogger()
    logger.info(sys.argv)
    logger.info(config)
    logger.info(dataset)
    logger.info(model)
    trainer = trainer_class(config, model)
    if pretrained:
        trainer.adv_start_epoch = 0
        logger.info(f"Initialised {len(shared)} tensors from {pretrained}" + (f"; not in it: {missing}" if missing else ""))
    if resume:
        trainer.resume_checkpoint(resume)
    return config, dataset, (train_data, valid_data, test_data), trainer


def run_recbole_robust(model=None, dataset=None, config_file_list=None, config_dict=None, saved=True,
                       preset=None, resume=None, pretrained=None, checkpoint=None, callback_fn=None):
    """Train (or load) and evaluate ``model`` on ``dataset``, RecBole style; attack it if asked.

    Args:
        model (str): plugin or RecBole model name.
        dataset (str): plugin dataset (``dataset_configs/``) or RecBole atomic dataset name.
        config_file_list (list of str): YAML config files.
        config_dict (dict): parameter overrides (above files, below the command line, as RecBole).
        saved (bool): save checkpoints (best model, and the resumable ``.last.pth`` state).
        preset (str): evaluation protocol preset, e.g. ``amr`` (``properties/presets/``).
        resume (str): checkpoint to continue training from.
        pretrained (str): checkpoint of a compatible model to start from (e.g. VBPR for AMR); the
            adversarial stage then starts at epoch 0.
        checkpoint (str): evaluate (and attack) this trained checkpoint instead of training.
        callback_fn (callable): ``callback_fn(epoch_idx, valid_score)`` after every validation.

    Returns:
        dict: ``best_valid_score``, ``valid_score_bigger``, ``best_valid_result``, ``test_result``,
        ``saved_model_file``, and ``attack`` (clean result, rows, report files) with ``attack`` set.
    """
    config, _, (train_data, valid_data, test_data), trainer = prepare_run(
        model, dataset, config_file_list, config_dict, preset, resume, pretrained, checkpoint
    )
    logger = getLogger()
    if checkpoint:
        best_valid_score, best_valid_result = None, None
        test_result = trainer.evaluate(test_data, model_file=checkpoint, show_progress=config["show_progress"])
        saved_model_file = checkpoint
    else:
        best_valid_score, best_valid_result = trainer.fit(
            train_data, valid_data, saved=saved, show_progress=config["show_progress"], callback_fn=callback_fn
        )
        test_result = trainer.evaluate(test_data, load_best_model=saved, show_progress=config["show_progress"])
        saved_model_file = trainer.saved_model_file if saved else None

    logger.info(set_color("best valid ", "yellow") + f": {best_valid_result}")
    logger.info(set_color("test result", "yellow") + f": {test_result}")
    logger.info(f"{config['model']} on {config['dataset']}:\n" + result_table(best_valid_result, test_result))
    result = {
        "best_valid_score": best_valid_score,
        "valid_score_bigger": config["valid_metric_bigger"],
        "best_valid_result": best_valid_result,
        "test_result": test_result,
        "saved_model_file": saved_model_file,
    }
    if config["attack"]:
        result["attack"] = run_attack(config, trainer, train_data, test_data)
    if config["analysis"]:
        result["analysis"] = run_analyses(config, trainer, train_data, test_data)
    return result


def _report_dir(config, key, kind):
    return config[key] or os.path.join(
        config["checkpoint_dir"], kind, f"{config['model']}-{config['dataset']}-{time.strftime('%Y%m%d-%H%M%S')}"
    )


ANALYSES = ("noise", "adjust", "landscape")


def run_analyses(config, trainer, train_data, test_data):
    """The MG paper's analyses named by ``analysis`` (noise, adjust, landscape); CSV, Markdown, PNG."""
    import numpy as np

    from recbole_robust.robustness import analyses
    from recbole_robust.robustness.attacks import evaluate_with
    from recbole_robust.robustness.report import write_landscape_report, write_table_report

    names = [config["analysis"]] if isinstance(config["analysis"], str) else list(config["analysis"])
    unknown = [n for n in names if n not in ANALYSES]
    if unknown:
        raise RecBoleRobustError(f"unknown analysis {unknown}; choose from {', '.join(ANALYSES)}")
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
        modalities = getattr(trainer.model, "modalities", None) or []
        modality = config["adjust_modality"] or ("text" if "text" in modalities else (modalities or [None])[0])
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
        out["landscape"] = {"losses": losses, "files": paths}
        logger.info(f"loss landscape: {paths['png']}")
    return out


def run_attack(config, trainer, train_data, test_data):
    """Attack the trainer's (best) model for every eps of ``attack_eps``; write CSV, Markdown and PNG."""
    from recbole_robust.robustness.attacks import attack_sweep
    from recbole_robust.robustness.report import write_attack_report

    metric = (config["attack_metric"] or config["valid_metric"]).lower()
    clean, rows = attack_sweep(
        trainer, train_data, test_data, list(config["attack_eps"]), attack_methods(config["attack"]), seed=config["seed"]
    )
    if metric not in clean:
        raise RecBoleRobustError(f"attack_metric {metric} is not among the evaluated metrics {list(clean)}")
    out_dir = _report_dir(config, "attack_dir", "robustness")
    title = f"{config['model']} on {config['dataset']}: attacks at test time"
    paths, text = write_attack_report(clean, rows, metric, out_dir, title)
    getLogger().info("\n" + text + f"\nreport: {', '.join(paths.values())}")
    return {"clean": clean, "rows": rows, "files": paths}


def compare_models(models, dataset, config_file_list=None, config_dict=None, preset=None):
    """Train each of two models on the same data and split; paired t-test of their per-user test metrics.

    Returns ``(rows, table)``; the table is also logged.
    """
    from recbole_robust.robustness.compare import comparison_table, evaluate_per_user, paired_t_test

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
