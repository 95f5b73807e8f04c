"""Entry points that launch several runs: ``compare_models`` (``--compare``), ``train_seeds`` (``--seeds``),
``robustness_report`` (``recbole-robust report``) and ``train_and_report`` (a report of models trained here).

They stand above ``quick_start`` (each run is its ``prepare_run`` or ``run_recbole_robust``) and use
``robustness/`` for what is computed on a trained model; ``robustness/`` itself never launches a run.
"""
import os
import platform
import subprocess
import time
from logging import getLogger

import numpy as np
from tabulate import tabulate

from recbole_robust.errors import RecBoleRobustError
from recbole_robust.quick_start import prepare_run, run_recbole_robust, validate_run
from recbole_robust.robustness import runs
from recbole_robust.robustness.attacks import attack_methods, pgd_settings
from recbole_robust.robustness.compare import baseline_metrics, comparison_table, evaluate_per_user, paired_t_test
from recbole_robust.robustness.summary import write_report
from recbole_robust.settings import as_list
from recbole_robust.trainer import load_checkpoint, load_weights

PYTHON_CALL = "(a Python call)"


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


def check_seeds(seeds):
    if not seeds or not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds):
        raise RecBoleRobustError(f"--seeds takes integers, got {seeds!r}")
    if len(set(seeds)) != len(seeds):
        raise RecBoleRobustError(f"--seeds gives a seed twice: {seeds}")
    return list(seeds)


def seeds_table(results, seeds):
    """The per-seed test metrics and their mean ± std, as one text table (metrics as rows)."""
    metrics = list(results[0]["test_result"])
    rows = []
    for m in metrics:
        values = np.array([r["test_result"][m] for r in results], dtype=float)
        rows.append([m, *[float(v) for v in values], f"{values.mean():.4f} ± {values.std():.4f}"])
    return tabulate(rows, headers=["metric", *[f"seed {s}" for s in seeds], f"mean ± std (n={len(seeds)})"],
                    tablefmt="github", floatfmt=".4f")


def train_seeds(model, dataset, seeds, config_file_list=None, config_dict=None, preset=None, saved=True):
    """One run of ``run_recbole_robust`` per seed (everything else equal); every run's settings are checked before
    the first one trains. Returns ``(results, table)``: each run's result, and the per-seed table with the mean ±
    std over the seeds (also logged)."""
    seeds = check_seeds(seeds)
    for seed in seeds:
        validate_run(model, dataset, config_file_list, {**(config_dict or {}), "seed": seed}, preset)
    results = []
    for seed in seeds:
        results.append(run_recbole_robust(model=model, dataset=dataset, config_file_list=config_file_list,
                                          config_dict={**(config_dict or {}), "seed": seed}, preset=preset,
                                          saved=saved))
    table = seeds_table(results, seeds)
    getLogger().info(f"{model} on {dataset}, seeds {', '.join(map(str, seeds))}: test metrics\n{table}")
    return results, table


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


def _evaluate_checkpoint(model, dataset, path, config_file_list, config_dict, preset, baselines=True):
    """One checkpoint: clean metrics (full precision) and per user, the run's analyses (files in its run folder),
    and, with ``baselines``, the chance and popularity baselines of its split."""
    config, data_set, (train_data, _, test_data), trainer = prepare_run(model, dataset, config_file_list, config_dict,
                                                                        preset, checkpoint=path)
    load_weights(trainer.model, path, config["device"])
    clean, per_user = evaluate_per_user(trainer, test_data)
    split = {name: (len(part.dataset), int(np.unique(part.dataset.inter_feat[data_set.uid_field].numpy()).size))
             for name, part in (("train", train_data), ("test", test_data))}
    return {"config": config, "clean": clean, "per_user": per_user, "seed": config["seed"], "checkpoint": path,
            "analyses": runs.run_analyses(config, trainer, train_data, test_data),
            "baselines": baseline_metrics(trainer, train_data, test_data) if baselines else {}, "split": split}


def git_commit():
    """The commit of the package's source checkout, or None (an installed wheel, no git)."""
    folder = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    if not os.path.isdir(os.path.join(folder, ".git")):
        return None
    try:
        out = subprocess.run(["git", "-C", folder, "rev-parse", "--short=12", "HEAD"], capture_output=True, text=True,
                             timeout=10)
        dirty = subprocess.run(["git", "-C", folder, "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    return out.stdout.strip() + (" (with uncommitted changes)" if dirty.stdout.strip() else "")


def versions():
    import recbole
    import torch

    from recbole_robust import __version__

    return (f"recbole-robust {__version__}, RecBole {recbole.__version__}, PyTorch {torch.__version__}, "
            f"NumPy {np.__version__}, Python {platform.python_version()}")


def report_settings(command, config, preset, split, analyses):
    """The settings section of a report: what a reader needs to repeat it (``summary.settings_records``)."""
    import torch

    eval_args = config["eval_args"]
    rows = {"command": command, "dataset": config["dataset"], "preset": preset or "none (RecBole's defaults)",
            "evaluation": f"mode {eval_args.get('mode')}, split {eval_args.get('split')}, order "
                          f"{eval_args.get('order')}, group_by {eval_args.get('group_by')}",
            "split sizes (first checkpoint)": ", ".join(f"{name} {n} interactions of {u} users"
                                                        for name, (n, u) in split.items()),
            "metrics": f"{', '.join(as_list(config['metrics']))} @ {as_list(config['topk'])}; full precision, "
                       f"rounded for display",
            "figures and tables centre on": (config["attack_metric"] or config["valid_metric"]).lower()}
    if "attack" in analyses:
        pgd = pgd_settings(config)
        rows["attacks"] = f"{analyses['attack'].title}; eps {as_list(config['attack_eps'])}"
        if "pgd" in attack_methods(config["attack"]):
            step = pgd["step_size"] if pgd["step_size"] is not None else 2.5 / pgd["steps"]
            rows["PGD"] = (f"{pgd['steps']} steps of {step:g} x eps (L2), projected onto the eps-ball; "
                           f"random start: {pgd['random_start']}")
    if "noise" in analyses:
        rows["noise"] = (f"sigma {as_list(config['noise_sigma'])} "
                         f"{'x each tensor' + chr(39) + 's std (relative)' if config['noise_relative'] else '(absolute)'}"
                         f", {config['noise_repeats']} draws")
    if "adjust" in analyses:
        rows["information adjustment"] = (f"fractions {as_list(config['adjust_fraction'])}, "
                                          f"{config['adjust_repeats']} draws; {analyses['adjust'].title}")
    if "promotion" in analyses:
        rows["promotion"] = (f"{config['promotion_items']} targets, eps {as_list(config['promotion_eps'])}, "
                             f"hit ratio@{config['promotion_topk']}")
    if "poisoning" in analyses:
        targets = config["poison_targets"]
        drawn = f"{targets} targets drawn per seed from the {config['poison_target_pool']} pool" if isinstance(
            targets, int) else f"targets {targets}"
        filler = config["poison_filler"] or "the mean profile length of"
        selected = config["poison_selected"] or "a tenth"
        rows["poisoning"] = (f"{drawn}; fake users with every target and {filler} filler items (bandwagon / segment: "
                             f"{selected} of them selected); hit ratio and NDCG @ {as_list(config['poison_topk'])} over "
                             "the real users who never interacted with a target; fake users in the training split only")
    rows.update({"versions": versions(), "git commit": git_commit() or "unknown (not a git checkout)",
                 "threads": torch.get_num_threads(), "device": str(config["device"]),
                 "date": time.strftime("%Y-%m-%d %H:%M:%S %Z")})
    return rows


def robustness_report(groups, dataset, config_file_list=None, config_dict=None, preset=None, out_dir=None,
                      command=None):
    """Evaluate every checkpoint of ``groups`` and write the report; returns ``(results, paths)``.

    ``groups``: ``[(label, [checkpoint of each seed])]`` (``parse_groups``), or ``(label, checkpoints, settings)``
    with settings of that label's own (e.g. its ``embedding_size``). ``command`` is shown in the report's
    settings (the CLI passes its command line)."""
    if not dataset:
        raise RecBoleRobustError("--robustness_report needs --dataset (the data the checkpoints were trained on)")
    groups = [(group[0], group[1], group[2] if len(group) > 2 else {}) for group in groups]
    models, seeds = {}, {}
    for _, paths, _ in groups:  # every file is checked before anything runs or is written
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
    for label, paths, extra in groups:
        label = label or models[paths[0]]
        if any(label == other for other, _, _ in labelled):
            raise RecBoleRobustError(f"--robustness_report: label {label!r} is given twice")
        labelled.append((label, paths, extra))
    out_dir = out_dir or default_report_dir(dataset)
    planned = [(label, path, _run_settings({**(config_dict or {}), **extra}, seeds[path],
                                           os.path.join(out_dir, "runs", f"{label}-{i}")))
               for label, paths, extra in labelled for i, path in enumerate(paths)]
    for label, path, settings in planned:  # every checkpoint fits its data and settings before any is evaluated
        validate_run(models[path], dataset, config_file_list, settings, preset, checkpoint=path)
    results, baselines, evaluated_seeds = {}, {}, set()
    for label, path, settings in planned:
        run = _evaluate_checkpoint(models[path], dataset, path, config_file_list, settings, preset,
                                   baselines=seeds[path] not in evaluated_seeds)  # the baselines once per split
        evaluated_seeds.add(seeds[path])
        results.setdefault(label, []).append(run)
        for name, metrics in run["baselines"].items():
            baselines.setdefault(name, []).append(metrics)
    first = next(iter(results.values()))[0]
    settings = report_settings(command or PYTHON_CALL, first["config"], preset, first["split"], first["analyses"])
    paths = write_report(results, dataset, out_dir, settings, baselines)
    getLogger().info(f"robustness report: {paths['md']}, {paths['html']}")
    return results, paths


def parse_variants(models, sets=()):
    """``["VBPR", "MG=VBPR"]`` and ``["MG.mirror_gradient=True", "epochs=5"]`` -> ``[(label, model, settings)]``
    (``Label=Model`` runs a model under a label of its own; ``key=value`` is every run's setting,
    ``Label.key=value`` one label's). Values are parsed as literals, never evaluated."""
    from recbole_robust.config import parse_value

    common, per_label = {}, {}
    for item in sets or ():
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise RecBoleRobustError(f"--set takes [Label.]key=value, got {item!r}")
        label, dot, name = key.rpartition(".")
        (per_label.setdefault(label, {}) if dot else common)[name] = parse_value(value)
    variants = []
    for item in models:
        label, sep, model = item.partition("=")
        model = model if sep else label
        if not label or not model:
            raise RecBoleRobustError(f"--models takes [Label=]Model, got {item!r}")
        model_settings = per_label.get(model, {}) if model != label else {}
        variants.append((label, model, {**common, **model_settings, **per_label.get(label, {})}))
    unknown = set(per_label) - {label for label, _, _ in variants} - {model for _, model, _ in variants}
    if unknown:
        raise RecBoleRobustError(f"--set names {', '.join(sorted(unknown))}, not a label or model of --models")
    if len({label for label, _, _ in variants}) != len(variants):
        raise RecBoleRobustError(f"--models gives a label twice: {models}")
    return variants


ADVERSARIAL_COUNTERPART = {"BPR": "APR", "VBPR": "AMR"}
"""The ``adv`` defence: the model trained with the plugin's adversarial training (APR is BPR-MF with adversarial
embedding perturbations, AMR is VBPR with adversarial feature perturbations)."""
DEFENCES = ("none", "pca", "stats", "adv", "mg", "sam")


def _defended(label, model, extra, defence):
    """``(label, model, settings)`` of ``model`` under ``defence``."""
    if defence == "none":
        return label, model, extra
    if defence in ("pca", "stats"):
        return f"{label}+{defence}", model, {**extra, "poison_detector": defence}
    if defence == "adv":
        if model not in ADVERSARIAL_COUNTERPART:
            raise RecBoleRobustError(f"--defences adv: {model} has no adversarially trained counterpart "
                                     f"({', '.join(f'{a} -> {b}' for a, b in ADVERSARIAL_COUNTERPART.items())})")
        counterpart = ADVERSARIAL_COUNTERPART[model]
        return (counterpart if label == model else f"{label}+adv"), counterpart, extra
    if defence == "mg":
        return f"{label}+MG", model, {**extra, "mirror_gradient": True}
    return f"{label}+SAM", model, {**extra, "sharpness": "sam"}


def _budget_name(budget):
    return f"{100 * budget:g}%" if isinstance(budget, float) else f"{budget}users"


def poison_grid(variants, attacks, budgets, defences):
    """The variants (``parse_variants``) of a poisoning grid: every model under every defence, trained on the clean
    data (no detector: there is nothing to detect) and on the data of every attack and budget; labels
    ``Model[+defence][@attack-budget]``. Each one measures the targets (the ``poisoning`` analysis)."""
    from recbole_robust.data.poison import ATTACKS, count_or_share

    for attack in attacks:
        if attack not in ATTACKS:
            raise RecBoleRobustError(f"--poisons: unknown attack {attack!r} (one of {', '.join(ATTACKS)})")
    for budget in budgets:
        if not count_or_share(budget):
            raise RecBoleRobustError(f"--budgets: {budget!r} is not a count >= 1 or a share in (0, 1)")
    for defence in defences:
        if defence not in DEFENCES:
            raise RecBoleRobustError(f"--defences: unknown defence {defence!r} (one of {', '.join(DEFENCES)})")
    grid = []
    for label, model, extra in variants:
        analyses = [a for a in as_list(extra.get("analysis") or []) if a != "poisoning"] + ["poisoning"]
        for defence in dict.fromkeys(defences):
            name, defended_model, settings = _defended(label, model, {**extra, "analysis": analyses}, defence)
            if defence not in ("pca", "stats"):
                grid.append((name, defended_model, settings))
            for attack in dict.fromkeys(attacks):
                for budget in dict.fromkeys(budgets):
                    grid.append((f"{name}@{attack}-{_budget_name(budget)}", defended_model,
                                 {**settings, "poison": attack, "poison_users": budget}))
    if not grid:
        raise RecBoleRobustError("--defences pca/stats need --poisons: a detector has nothing to find in clean data")
    return grid


def train_and_report(variants, dataset, seeds=None, config_file_list=None, config_dict=None, preset=None,
                     out_dir=None, command=None):
    """Train every variant (``parse_variants``) once per seed (``None``: once, with the configured seed) into
    ``<out_dir>/checkpoints/``, then write the robustness report of those checkpoints (``robustness_report``: the
    attacks and analyses of the settings run there, not after each training). Every run's settings are checked
    before the first one trains. Returns ``(results, paths, trained)``: the report's results and paths, and each
    label's training results."""
    seeds = [{}] if seeds is None else [{"seed": seed} for seed in check_seeds(seeds)]
    out_dir = out_dir or default_report_dir(dataset)
    plans = [(label, model, {**(config_dict or {}), **extra, **seed,
                             "checkpoint_dir": os.path.join(out_dir, "checkpoints")})
             for label, model, extra in variants for seed in seeds]
    for _, model, settings in plans:
        validate_run(model, dataset, config_file_list, settings, preset)
    trained = {}
    for label, model, settings in plans:
        run = run_recbole_robust(model=model, dataset=dataset, config_file_list=config_file_list, preset=preset,
                                 config_dict={**settings, "attack": None, "analysis": None})
        trained.setdefault(label, []).append(run)
    groups = [(label, [r["saved_model_file"] for r in trained[label]], extra) for label, _, extra in variants]
    results, paths = robustness_report(groups, dataset, config_file_list, config_dict, preset, out_dir, command)
    return results, paths, trained


def default_report_dir(dataset):
    return os.path.join("saved", "reports", f"{dataset}-{time.strftime('%Y%m%d-%H%M%S')}")
