"""Entry points that launch several runs: ``compare_models`` (``--compare``) and ``robustness_report``
(``--robustness_report``).

They stand above ``quick_start`` (each run is its ``prepare_run``) and use ``robustness/`` for what is
computed on a trained model; ``robustness/`` itself never launches a run.
"""
import os
import time
from logging import getLogger

from recbole_robust.errors import RecBoleRobustError
from recbole_robust.quick_start import prepare_run, validate_run
from recbole_robust.robustness import runs
from recbole_robust.robustness.compare import comparison_table, evaluate_per_user, paired_t_test
from recbole_robust.robustness.summary import write_report
from recbole_robust.trainer import load_checkpoint, load_weights


def compare_models(models, dataset, config_file_list=None, config_dict=None, preset=None):
    """Train each of two models on the same data and split; paired t-test of their per-user test metrics.

    Returns ``(rows, table)``; the table is also logged.
    """
    if len(models) != 2:
        raise RecBoleRobustError(f"--compare takes two models, got {len(models)}: {models}")
    per_user = []
    for name in models:
        config, _, (train_data, valid_data, test_data), trainer = prepare_run(
            name, dataset, config_file_list, config_dict, preset
        )
        trainer.fit(train_data, valid_data, saved=True, show_progress=config["show_progress"])
        load_weights(trainer.model, trainer.saved_model_file, config["device"])
        per_user.append(evaluate_per_user(trainer, test_data)[1])
    rows = paired_t_test(models[0], per_user[0], models[1], per_user[1])
    table = comparison_table(rows, *models)
    getLogger().info(f"{models[1]} vs {models[0]} on {dataset} (paired over {len(next(iter(per_user[0].values())))} "
                     f"test users):\n{table}")
    return rows, table


def parse_groups(items):
    """``["VBPR=a.pth,b.pth", "c.pth"]`` -> ``[("VBPR", ["a.pth", "b.pth"]), (None, ["c.pth"])]`` (label None: the
    checkpoint's model name)."""
    groups = []
    for item in items:
        label, sep, paths = item.partition("=")  # the first '=': a checkpoint path may hold more
        if not sep or "/" in label or os.sep in label:  # no label: all of it is paths
            label, paths = "", item
        paths = [p for p in paths.split(",") if p]
        if not paths:
            raise RecBoleRobustError(f"--robustness_report: no checkpoint in {item!r} (LABEL=CKPT[,CKPT...])")
        groups.append((label or None, paths))
    return groups


def _run_settings(config_dict, seed, run_dir):
    """A checkpoint's settings: its seed (its split and sampled negatives), its own output folder."""
    return {**(config_dict or {}), "seed": seed, "attack_dir": run_dir, "analysis_dir": run_dir}


def _evaluate_checkpoint(model, dataset, path, config_file_list, config_dict, preset):
    """One checkpoint: clean metrics per user, and the run's attacks and analyses (files in its run folder)."""
    config, _, (train_data, _, test_data), trainer = prepare_run(model, dataset, config_file_list, config_dict, preset,
                                                                 checkpoint=path)
    load_weights(trainer.model, path, config["device"])
    clean, per_user = evaluate_per_user(trainer, test_data)
    run = {"config": config, "clean": clean, "per_user": per_user}
    if config["attack"]:
        attacked_per_user = []

        def evaluate(trainer, data, tensors=None):
            result, users = evaluate_per_user(trainer, data, tensors)
            attacked_per_user.append(users)
            return result

        run["attack"] = runs.run_attack(config, trainer, train_data, test_data, evaluate=evaluate)
        for row, users in zip(run["attack"]["rows"], attacked_per_user[1:]):  # the first is the clean evaluation
            row["per_user"] = users
    if config["analysis"]:
        run["analysis"] = runs.run_analyses(config, trainer, train_data, test_data)
    return run


def robustness_report(groups, dataset, config_file_list=None, config_dict=None, preset=None, out_dir=None):
    """Evaluate every checkpoint of ``groups`` (``parse_groups``) and write the report; returns its paths."""
    if not dataset:
        raise RecBoleRobustError("--robustness_report needs --dataset (the data the checkpoints were trained on)")
    models, seeds = {}, {}
    for _, paths in groups:  # every file is checked before anything runs or is written
        for path in paths:
            saved = load_checkpoint(path, "cpu")["config"]
            if saved.get("dataset") != dataset:
                raise RecBoleRobustError(f"checkpoint {path} was trained on dataset {saved.get('dataset')}, "
                                         f"the report is of {dataset}")
            models[path] = str(saved["model"])
            seed = saved.get("seed")
            if not isinstance(seed, int) or isinstance(seed, bool):
                raise RecBoleRobustError(f"checkpoint {path} does not record an integer seed")
            seeds[path] = seed
    labelled = []
    for label, paths in groups:
        label = label or models[paths[0]]
        if any(label == other for other, _ in labelled):
            raise RecBoleRobustError(f"--robustness_report: label {label!r} is given twice")
        labelled.append((label, paths))
    out_dir = out_dir or os.path.join("saved", "reports", f"{dataset}-{time.strftime('%Y%m%d-%H%M%S')}")
    planned = [(label, path, os.path.join(out_dir, "runs", f"{label}-{i}"))
            for label, paths in labelled for i, path in enumerate(paths)]
    for label, path, run_dir in planned:  # every checkpoint fits its data and settings before any is evaluated
        validate_run(models[path], dataset, config_file_list, _run_settings(config_dict, seeds[path], run_dir), preset,
                     checkpoint=path)
    results = {}
    for label, path, run_dir in planned:
        results.setdefault(label, []).append(_evaluate_checkpoint(
            models[path], dataset, path, config_file_list, _run_settings(config_dict, seeds[path], run_dir), preset))
    paths = write_report(results, dataset, out_dir, {label: p for label, p in labelled})
    getLogger().info(f"robustness report: {paths['md']}, {paths['html']}")
    return results, paths
