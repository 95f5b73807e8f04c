"""Ray Tune search over the plugin's (and RecBole's) hyper-parameters.

Paths (data, build cache, checkpoints) are made absolute before trials start, because Ray runs each
trial in a working directory of its own.

One trial is one run of the normal pipeline (``quick_start.run_recbole_robust``) that reports the
valid metric after every validation, so a scheduler such as ASHA can stop bad trials early; a trial
that finishes also reports the test metrics of its best checkpoint.

Search spaces are YAML (``properties/search/<Model>.yaml``), one entry per parameter:

    learning_rate: {loguniform: [1e-4, 1e-1]}
    adv_eps: {choice: [0.01, 0.1, 1, 10]}
    adv_lambda: {grid: [0.1, 1, 10]}
    embedding_size: {randint: [16, 129]}
    reg_weight: {uniform: [0.0, 1e-3]}

Results: ``<local_dir>/<name>/`` holds Ray's own logs and checkpoints, ``results.csv`` and
``results.md`` (one row per trial: parameters, best valid metric, test metrics, status) and
``best_config.yaml`` (usable with ``--config_files``).
"""
import math
import os
import socket
import sys
import time
from logging import getLogger
from pathlib import Path

import yaml

from recbole_robust import resources
from recbole_robust.config import check_settings, parse_value, read_settings_file
from recbole_robust.errors import RecBoleRobustError
from recbole_robust.utils import atomic_write, write_csv

SPACE_KINDS = ("choice", "grid", "uniform", "loguniform", "randint")
SEARCH_ALGS = ("random", "grid", "hyperopt")


def read_search_space(path):
    """Parse a search-space YAML into ``{name: (kind, values)}``, with one-line errors.

    Values are data: a string in a grid is a string (``PluginConfig`` parses it as a literal in the
    trial, never evaluates it), and each value is checked like the same setting on the command line.
    """
    if not os.path.isfile(path):
        shipped = resources.search_space_file(Path(path).stem)
        if shipped is None:
            raise RecBoleRobustError(f"search space {path} not found")
        path = str(shipped)
    space = read_settings_file(path, "search space")
    parsed = {}
    for name, spec in space.items():
        if not isinstance(spec, dict) or len(spec) != 1 or next(iter(spec)) not in SPACE_KINDS:
            raise RecBoleRobustError(
                f"search space {path}: '{name}' must be one of {{{', '.join(SPACE_KINDS)}}}: [...], got {spec!r}"
            )
        kind, values = next(iter(spec.items()))
        if kind in ("uniform", "loguniform", "randint") and (not isinstance(values, list) or len(values) != 2):
            raise RecBoleRobustError(f"search space {path}: '{name}' {kind} needs [low, high], got {values!r}")
        if kind in ("choice", "grid") and (not isinstance(values, list) or not values):
            raise RecBoleRobustError(f"search space {path}: '{name}' {kind} needs a non-empty list")
        if kind in ("uniform", "loguniform", "randint"):
            check_bounds(path, name, kind, values)
        # every value a trial can get is checked like the same setting on the command line (randint's
        # upper bound is exclusive)
        for value in values if kind in ("choice", "grid") else [values[0], values[1] - (kind == "randint")]:
            check_settings({name: parse_value(value)}, f"search space {path}: ")
        parsed[name] = (kind, values)
    return parsed


def trial_count(space, num_samples, search_alg):
    """How many trials a search runs: the grid entries crossed, times ``num_samples`` (HyperOpt: ``num_samples``)."""
    if search_alg == "hyperopt":
        return num_samples
    return math.prod(len(values) for kind, values in space.values() if kind == "grid") * num_samples


def check_bounds(path, name, kind, values):
    """``[low, high]`` of a uniform / loguniform / randint entry: finite numbers, low < high (integers for
    randint, low > 0 for loguniform)."""
    where = f"search space {path}: '{name}' {kind} [low, high]"
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in values):
        raise RecBoleRobustError(f"{where} must be finite numbers, got {values!r}")
    low, high = values
    if kind == "randint" and not all(isinstance(v, int) for v in values):
        raise RecBoleRobustError(f"{where} must be integers, got {values!r}")
    if not low < high:
        raise RecBoleRobustError(f"{where} needs low < high, got {values!r}")
    if kind == "loguniform" and low <= 0:
        raise RecBoleRobustError(f"{where} needs low > 0, got {values!r}")


def check_search_options(num_samples, cpus_per_trial, gpus_per_trial, concurrent_trials, time_budget_s, max_failures):
    """The search's own options (one line each), before anything starts."""
    def number(value):
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)

    checks = [
        ("num_samples", num_samples, isinstance(num_samples, int) and num_samples >= 1, "an integer >= 1"),
        ("cpus_per_trial", cpus_per_trial, number(cpus_per_trial) and cpus_per_trial > 0, "a number > 0"),
        ("gpus_per_trial", gpus_per_trial, number(gpus_per_trial) and gpus_per_trial >= 0, "a number >= 0"),
        ("concurrent_trials", concurrent_trials,
         concurrent_trials is None or isinstance(concurrent_trials, int) and concurrent_trials >= 1, "an integer >= 1"),
        ("time_budget_s", time_budget_s, time_budget_s is None or number(time_budget_s) and time_budget_s > 0,
         "a number of seconds > 0"),
        ("max_failures", max_failures, isinstance(max_failures, int) and max_failures >= -1,
         "an integer >= 0 (-1: retry without end)"),
    ]
    for key, value, ok, expected in checks:
        if not ok:
            raise RecBoleRobustError(f"--{key} must be {expected}, got {value!r}")


def check_address(address):
    """``host:port`` of a Ray cluster must answer before Ray is asked to join it (Ray waits minutes)."""
    if not address or address == "auto" or "://" in address:
        return
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise RecBoleRobustError(f"--address must be auto or host:port, got {address!r}")
    try:
        socket.create_connection((host, int(port)), timeout=5).close()
    except OSError as e:
        raise RecBoleRobustError(f"--address {address}: no Ray cluster answers there ({e.strerror or e})") from None


def check_cluster_resources(cpus_per_trial, gpus_per_trial):
    """A trial that asks for more CPUs or GPUs than the cluster has would wait for ever."""
    import ray

    available = ray.cluster_resources()
    for key, wanted in (("CPU", cpus_per_trial), ("GPU", gpus_per_trial)):
        if wanted and wanted > available.get(key, 0):
            raise RecBoleRobustError(f"--{key.lower()}s_per_trial {wanted:g} is more than the Ray cluster's "
                                     f"{available.get(key, 0):g} {key}s: no trial could start")
    return gpu_note(gpus_per_trial, available.get("GPU", 0))


def gpu_note(gpus_per_trial, cluster_gpus):
    """What to tell a user whose cluster has GPUs that the trials will not use (``gpus_per_trial`` 0), or None."""
    if gpus_per_trial or not cluster_gpus:
        return None
    return (f"the Ray cluster has {cluster_gpus:g} GPU(s), but --gpus_per_trial is 0: every trial trains on the CPU "
            "(set --gpus_per_trial, e.g. 0.5 for two trials a GPU)")


def to_ray_space(space, search_alg):
    from ray import tune

    if search_alg == "hyperopt" and any(kind == "grid" for kind, _ in space.values()):
        raise RecBoleRobustError(f"search_alg {search_alg} takes no grid entries; use choice")
    build = {
        "choice": tune.choice,
        "grid": tune.grid_search,
        "uniform": lambda v: tune.uniform(*v),
        "loguniform": lambda v: tune.loguniform(*v),
        "randint": lambda v: tune.randint(*v),
    }
    return {name: build[kind](values) for name, (kind, values) in space.items()}


def trial_devices(gpu_ids):
    """RecBole's ``gpu_id`` for the GPUs Ray assigned to a trial ('' = CPU).

    RecBole's ``Config`` sets ``CUDA_VISIBLE_DEVICES`` to ``gpu_id`` (default '0'), which would send
    every trial to the first GPU; Ray's assignment is passed on instead.
    """
    return {"gpu_id": ",".join(str(i) for i in gpu_ids)}


def _trainable(base):
    """The function Ray runs for each trial (one training run, reporting every validation)."""

    def trial(params):
        import ray
        from ray.air import session

        from recbole_robust.quick_start import run_recbole_robust

        config_dict = {"threads": max(1, int(base["_cpus_per_trial"])), **base["config_dict"]}
        config_dict.update(params)
        config_dict.update(trial_devices(ray.get_gpu_ids()))
        config_dict.update({"show_progress": False, "state": "WARNING"})
        metric = base["metric"]

        def report(epoch_idx, valid_score):
            session.report({metric: float(valid_score), "epoch": epoch_idx})

        result = run_recbole_robust(
            model=base["model"], dataset=base["dataset"], config_file_list=base["config_files"],
            config_dict=config_dict, preset=base["preset"], callback_fn=report,
        )
        final = {metric: float(result["best_valid_score"]), "done_training": True}
        final.update({f"test_{k}": float(v) for k, v in (result["test_result"] or {}).items()})
        session.report(final)

    return trial


def _scheduler(name, max_t):
    if name in (None, "", "fifo"):
        return None
    if name == "asha":
        from ray.tune.schedulers import ASHAScheduler

        return ASHAScheduler(time_attr="training_iteration", max_t=max_t, grace_period=1, reduction_factor=2)
    raise RecBoleRobustError(f"scheduler must be asha or fifo, not '{name}'")


def _search_alg(name, seed):
    if name in ("random", "grid"):
        return None  # Ray's BasicVariantGenerator: grid entries are crossed, the rest sampled
    if name == "hyperopt":
        from ray.tune.search.hyperopt import HyperOptSearch

        return HyperOptSearch(random_state_seed=seed)
    raise RecBoleRobustError(f"search_alg must be one of {', '.join(SEARCH_ALGS)}, not '{name}'")


def tune(model, dataset, search_space, num_samples=1, scheduler="fifo", search_alg="random",
         cpus_per_trial=1, gpus_per_trial=0, concurrent_trials=None, time_budget_s=None, max_failures=1,
         address=None, resume=None, local_dir="ray_results", name=None, config_file_list=None,
         config_dict=None, preset=None, verbose=1):
    """Run a Ray Tune search; returns ``(rows, best_config, output_dir)``.

    ``address``: an existing Ray cluster (``auto`` or ``host:port``); without it a local Ray instance
    is started and shut down. ``resume``: the folder of an interrupted search to continue.
    """
    import ray
    from ray import air
    from ray import tune as ray_tune

    from recbole_robust.quick_start import make_config

    if search_alg not in SEARCH_ALGS:
        raise RecBoleRobustError(f"search_alg must be one of {', '.join(SEARCH_ALGS)}, not '{search_alg}'")
    check_search_options(num_samples, cpus_per_trial, gpus_per_trial, concurrent_trials, time_budget_s, max_failures)
    check_address(address)
    space = read_search_space(search_space)
    config_dict = dict(config_dict or {})
    config = make_config(model, dataset, config_file_list, config_dict, preset)  # validates names and data
    unknown = [n for n in space if n not in config.final_config_dict]
    if unknown:
        raise RecBoleRobustError(f"search space names unknown parameters of {model}: {', '.join(unknown)}")
    if config["nproc"] > 1 or config["world_size"] > 1 or {"nproc", "world_size"} & set(space):
        raise RecBoleRobustError("a Ray trial is one process: nproc and world_size are not for searches (Ray "
                                 "runs trials side by side; --cpus_per_trial gives each its threads)")
    for key in ("build_dir", "checkpoint_dir"):
        config_dict[key] = os.path.abspath(config[key])
    config_dict["data_path"] = os.path.abspath(config.external_config_dict.get("data_path") or "dataset")
    metric, mode = config["valid_metric"].lower(), "max" if config["valid_metric_bigger"] else "min"
    if resume:
        local_dir, name = os.path.split(os.path.abspath(resume))
    name = name or f"{model}-{dataset}-{time.strftime('%Y%m%d-%H%M%S')}"
    local_dir = os.path.abspath(local_dir)
    base = {"model": model, "dataset": dataset, "config_dict": config_dict, "preset": preset,
            "config_files": [os.path.abspath(f) for f in config_file_list or []], "metric": metric,
            "_cpus_per_trial": cpus_per_trial}

    started_here = not ray.is_initialized()
    if started_here:
        try:
            ray.init(address=address, include_dashboard=False, ignore_reinit_error=True, log_to_driver=verbose > 1)
        except ConnectionError as e:
            raise RecBoleRobustError(f"--address {address}: {str(e).splitlines()[0]}") from None
    try:
        note = check_cluster_resources(cpus_per_trial, gpus_per_trial)
        if note:
            getLogger().warning(note)
            print(f"note: {note}", file=sys.stderr)
        trainable = ray_tune.with_resources(_trainable(base), {"cpu": cpus_per_trial, "gpu": gpus_per_trial})
        path = os.path.join(local_dir, name)
        if resume:
            if not ray_tune.Tuner.can_restore(path):
                raise RecBoleRobustError(f"no search to resume at {path}")
            tuner = ray_tune.Tuner.restore(path, trainable, resume_errored=True)
        else:
            tuner = ray_tune.Tuner(
                trainable,
                param_space=to_ray_space(space, search_alg),
                tune_config=ray_tune.TuneConfig(
                    metric=metric, mode=mode, num_samples=num_samples,
                    # one report per epoch plus the final one with the test metrics
                    scheduler=_scheduler(scheduler, config["epochs"] + 1),
                    search_alg=_search_alg(search_alg, config["seed"]),
                    max_concurrent_trials=concurrent_trials, time_budget_s=time_budget_s,
                ),
                run_config=air.RunConfig(
                    name=name, storage_path=local_dir, verbose=verbose,
                    failure_config=air.FailureConfig(max_failures=max_failures),
                ),
            )
        grid = tuner.fit()
    finally:
        if started_here:
            ray.shutdown()
    rows = result_rows(grid, list(space), metric, mode)
    best = best_config(grid, rows, metric, mode)
    write_results(path, rows, best, metric)
    return rows, best, path


def result_rows(grid, params, metric, mode):
    """One row per trial: its parameters, its best valid metric (Ray's ``ResultGrid.get_dataframe`` with
    ``filter_metric``: each trial's best report), the epochs it reported, its status and test metrics."""
    frame = grid.get_dataframe(filter_metric=metric, filter_mode=mode)
    best = {} if frame.empty or metric not in frame else dict(zip(frame["trial_id"], frame[metric]))
    rows = []
    for result in grid:
        history = result.metrics_dataframe
        reported = int(history[metric].notna().sum()) if history is not None and metric in history else 0
        trial_id = (result.metrics or {}).get("trial_id")
        score = best.get(trial_id) if reported else None
        row = {"trial": os.path.basename(result.log_dir or "") if result.log_dir else "",
               **{p: result.config.get(p) for p in params},
               f"best_{metric}": None if score is None else float(score), "epochs_reported": reported,
               "status": "error" if result.error else ("completed" if (result.metrics or {}).get("done_training")
                                                       else "stopped early")}
        row.update({k: v for k, v in (result.metrics or {}).items() if k.startswith("test_")})
        if result.error:
            row["error"] = str(result.error).strip().splitlines()[-1][:200]
        rows.append(row)
    return rows


def best_config(grid, rows, metric, mode):
    """The row of the best trial (Ray's ``get_best_result`` over every report, ``scope="all"``), or None."""
    if not any(r[f"best_{metric}"] is not None for r in rows):
        return None
    best = grid.get_best_result(metric=metric, mode=mode, scope="all")
    trial = os.path.basename(best.log_dir or "")
    return next(r for r in rows if r["trial"] == trial)


def write_results(path, rows, best, metric):
    """``results.csv``, ``results.md`` and (with a best trial) ``best_config.yaml``, each written atomically."""
    from tabulate import tabulate

    os.makedirs(path, exist_ok=True)
    write_csv(os.path.join(path, "results.csv"), rows)
    columns = list(dict.fromkeys(k for r in rows for k in r))
    table = tabulate([[r.get(c, "") for c in columns] for r in rows], headers=columns, tablefmt="github",
                     floatfmt=".4g")
    atomic_write(os.path.join(path, "results.md"), lambda tmp: Path(tmp).write_text(table + "\n", encoding="utf-8"))
    if best is not None:
        params = {k: v for k, v in best.items()
                  if k not in ("trial", "status", "epochs_reported", "error") and not k.startswith(("best_", "test_"))}
        text = f"# best trial {best['trial']}: {metric} = {best[f'best_{metric}']}\n" + yaml.safe_dump(params)
        atomic_write(os.path.join(path, "best_config.yaml"), lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))
