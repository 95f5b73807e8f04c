"""The one training pipeline: ``run_recbole_robust()``, used by the CLI, by Python callers and by tuning.

It follows RecBole's ``run_recbole`` step by step (Config, seed, dataset, dataloaders, model,
trainer, fit, evaluate) with RecBole's own functions, and adds: plugin model and dataset lookup with
one-line errors, evaluation presets, the plugin trainers (adversarial stages, safe checkpoints,
resume, pre-trained initialisation), and a logger that starts only once every input has been
validated, so bad input leaves nothing on disk. Attacks and analyses are run by
``robustness.runs``; their settings are checked here, before training.
"""
import functools
import glob
import logging
import os
import secrets
import sys
from logging import getLogger
from pathlib import Path

import recbole
import torch
from recbole.data import create_dataset, data_preparation
from recbole.utils import init_logger, init_seed, set_color
from tabulate import tabulate

from recbole_robust import resources
from recbole_robust.config import PluginConfig, check_metrics, check_settings, read_settings_file
from recbole_robust.data.prepare import check_dataset_exists, undo_on_error
from recbole_robust.data.heldout import check_heldout, use_heldout_split
from recbole_robust.data.poison import check_poison_options, use_poisoned_split
from recbole_robust.errors import Interrupted, RecBoleRobustError
from recbole_robust.registry import get_model, get_trainer
from recbole_robust.robustness import runs
from recbole_robust.trainer import distributed
from recbole_robust.trainer.checkpoint import (best_checkpoint_file, check_compatible, init_from_checkpoint,
                                               last_checkpoint_file, load_checkpoint)
from recbole_robust.trainer.trainer import check_mixed_precision, check_training_options
from recbole_robust.utils import available_cpus, remove_stale_temporaries, writable_folder

_RUN_HANDLERS = []
"""The log handlers RecBole's ``init_logger`` added for this process's latest run (``start_logging``)."""


RECBOLE_DIR = os.path.dirname(os.path.abspath(recbole.__file__)) + os.sep
PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep


def raised_by_recbole(error):
    """Whether ``error`` arose in RecBole's own code: the innermost frame of RecBole or the plugin in its
    traceback is RecBole's (libraries below it, e.g. pandas, may have raised it for RecBole)."""
    owner, tb = None, error.__traceback__
    while tb is not None:
        path = os.path.abspath(tb.tb_frame.f_code.co_filename)
        if path.startswith(RECBOLE_DIR):
            owner = "recbole"
        elif path.startswith(PACKAGE_DIR):
            owner = "plugin"
        tb = tb.tb_next
    return owner == "recbole"


def refusal(error):
    """A ``RecBoleRobustError`` (one line) for what RecBole's own validation raised, or ``None``.

    RecBole checks many settings and files itself, deep inside ``Config``, ``create_dataset`` and
    ``data_preparation`` (an unknown evaluation mode, ranking and value metrics mixed, a filter that
    removes every user, a field not in the data ...); those are input errors, not crashes.
    """
    if isinstance(error, MemoryError) or isinstance(error, RuntimeError) and "allocate" in str(error):
        first = str(error).splitlines()[0] if str(error) else "out of memory"
        return RecBoleRobustError(f"not enough memory for this model and data ({first[:200]}); "
                                  "lower embedding_size or the batch sizes")
    if isinstance(error, RecBoleRobustError) or not raised_by_recbole(error) or not isinstance(
            error, (ValueError, KeyError, NotImplementedError, AssertionError, IndexError, TypeError, RuntimeError)):
        return None
    if isinstance(error, KeyError):
        return RecBoleRobustError(f"RecBole refused the settings or data: no field or setting {error.args[0]!r} "
                                  "(check load_col, USER_ID_FIELD, ITEM_ID_FIELD and the atomic files' header)")
    first = str(error).splitlines()[0] if str(error) else type(error).__name__
    return RecBoleRobustError(f"RecBole refused the settings or data: {first}")


def refusing_recbole_errors(function):
    """``function`` with what RecBole's own validation raises turned into one line (``refusal``)."""
    @functools.wraps(function)
    def checked(*args, **kwargs):
        try:
            return function(*args, **kwargs)
        except Exception as e:
            refused = refusal(e)
            if refused is None:
                raise
            raise refused from e

    return checked


@refusing_recbole_errors
def make_config(model, dataset, config_file_list=None, config_dict=None, preset=None):
    """The plugin's ``Config`` (``config.PluginConfig``) for a plugin or RecBole model.

    Names, files and setting types are checked first. ``preset`` names an evaluation protocol
    (``properties/presets/<name>.yaml``), then the model's defaults under it
    (``properties/presets/<name>/<Model>.yaml``, e.g. the MG release's configs); both are read before
    the user's config files, so anything the user sets wins.
    """
    check_arguments(model, dataset, config_file_list, config_dict, preset)
    get_model(model)
    files = list(config_file_list or [])
    for path in files:
        check_settings(read_settings_file(path), f"config file {path}: ")
    if preset:
        preset_file = resources.preset_file(preset)
        if preset_file is None:
            raise RecBoleRobustError(f"unknown preset '{preset}'; presets: {', '.join(resources.preset_names())}")
        files.insert(0, str(preset_file))
        model_defaults = resources.preset_model_file(preset, model)
        if model_defaults is not None:
            files.insert(1, str(model_defaults))
    config = PluginConfig(model=model, dataset=dataset, config_file_list=files or None, config_dict=config_dict)
    check_dataset_exists(config)
    check_metrics(config)
    return config


def check_arguments(model, dataset, config_file_list, config_dict, preset):
    """The Python API's arguments have the types the command line gives them: one-line errors."""
    if not model:
        raise RecBoleRobustError("no model given (use --model=<name>)")
    if not dataset:
        raise RecBoleRobustError("no dataset given (use --dataset=<name>)")
    for what, value in (("model", model), ("dataset", dataset), ("preset", preset)):
        if value is not None and not isinstance(value, str):
            raise RecBoleRobustError(f"{what} must be a name (a string), got {value!r}")
    if preset is not None and (not preset or not all(c.isalnum() or c in "_-" for c in preset)):
        raise RecBoleRobustError(f"unknown preset '{preset}': a preset is a name, not a path; "
                                 f"presets: {', '.join(resources.preset_names())}")
    if config_dict is not None and not isinstance(config_dict, dict):
        raise RecBoleRobustError(f"config_dict must be a dict of settings, got a {type(config_dict).__name__}")
    if config_file_list is not None and (
            not isinstance(config_file_list, (list, tuple)) or not all(isinstance(f, str) for f in config_file_list)):
        raise RecBoleRobustError(f"config_file_list must be a list of file names, got {config_file_list!r}")


def check_data_options(config, dataset, train_data, test_data):
    """Settings that depend on the loaded data, checked before the model is built or trained."""
    if len(test_data.dataset) == 0:
        raise RecBoleRobustError(f"the test split of dataset '{config.dataset}' holds no interactions: "
                                 "nothing could be evaluated (check the split, eval_args and the filters)")
    n_items = dataset.item_num - 1  # without RecBole's padding id 0
    topk = config["topk"] if isinstance(config["topk"], list) else [config["topk"]]
    if topk and max(topk) > n_items:
        raise RecBoleRobustError(f"topk {max(topk)} is larger than the {n_items} items of dataset '{config.dataset}'")
    runs.check_robustness_data(config, train_data)  # e.g. the promotion's targets among the training items


def load_data(config):
    """RecBole dataset and train/valid/test dataloaders of ``config`` (seeded as RecBole does)."""
    check_heldout(config)
    check_poison_options(config)
    init_seed(config["seed"], config["reproducibility"])
    dataset = create_dataset(config)
    use_heldout_split(config, dataset)  # heldout_users: the strong-generalisation split (data/heldout.py)
    use_poisoned_split(config, dataset)  # fake users, noisy feedback, detection (data/poison.py)
    train_data, valid_data, test_data = data_preparation(config, dataset)
    return dataset, train_data, valid_data, test_data


def build_model(config, train_data):
    # every rank of a multi-process run draws the same weights (RecBole adds local_rank, then relies on DDP's broadcast)
    init_seed(config["seed"], config["reproducibility"])
    return get_model(config["model"])(config, train_data._dataset).to(config["device"])


def result_table(best_valid_result, test_result):
    """The metrics of a run as a text table: one row per metric, best-valid and test columns."""
    metrics = list(test_result or best_valid_result or {})
    rows = [
        [m, (best_valid_result or {}).get(m, ""), (test_result or {}).get(m, "")]
        for m in metrics
    ]
    return tabulate(rows, headers=["metric", "best valid", "test"], floatfmt=".4f", tablefmt="github")


def check_output_folders(config, resume=None):
    """Every folder the run will write to must be writable: checked before anything is written."""
    folders = {"checkpoint_dir": config["checkpoint_dir"], "working folder (log/)": os.getcwd(),
               "log folder": os.path.join(os.getcwd(), "log"),
               "tensorboard folder": os.path.join(os.getcwd(), "log_tensorboard")}
    if config["plugin_build"] or config["poison"]:
        folders["build_dir"] = config["build_dir"]
    if resume:
        folders["--resume folder"] = os.path.dirname(os.path.abspath(resume))
    for key in ("attack_dir", "analysis_dir"):
        if config[key]:
            folders[key] = config[key]
    for what, path in folders.items():
        folder, ok = writable_folder(path)
        if not ok:
            reason = "is read-only" if os.path.isdir(folder) else "is a file, not a folder"
            raise RecBoleRobustError(f"{what} {path} cannot be written to ({folder} {reason})")


def refuse_pickled_caches(config):
    """RecBole unpickles saved datasets / dataloaders it finds; the plugin's pipeline never does."""
    for key in ("save_dataset", "save_dataloaders", "dataset_save_path", "dataloaders_save_path"):
        if config[key]:
            raise RecBoleRobustError(f"{key} is not supported: RecBole stores and reloads it with pickle, "
                                     "which can run code; the plugin caches built datasets as atomic files")
    cached = glob.glob(os.path.join(glob.escape(config["checkpoint_dir"]), f"{glob.escape(config['dataset'])}-*Dataset.pth"))
    cached.append(os.path.join(config["checkpoint_dir"], f"{config['dataset']}-for-{config['model']}-dataloader.pth"))
    for path in cached:  # the file names RecBole's create_dataset and data_preparation look for
        if os.path.exists(path):
            raise RecBoleRobustError(f"{path} would be unpickled by RecBole's create_dataset / data_preparation; "
                                     "remove it (the plugin never loads pickled datasets)")


def use_threads(config):
    """Set PyTorch's threads for the run: ``threads``, else the CPUs available to this process (its affinity and
    cgroup quota, ``utils.available_cpus``; PyTorch's own default counts every core of the machine), shared by the
    processes of ``nproc``."""
    processes = config["nproc"] if distributed.in_worker() else 1
    torch.set_num_threads(config["threads"] or max(1, available_cpus() // processes))


def threads_line(config):
    source = ("the threads setting" if config["threads"] else
              "the CPUs available to this process" + (" / nproc" if distributed.in_worker() else "")
              + "; set threads to change")
    return f"PyTorch threads: {torch.get_num_threads()} ({source})"


def start_logging(config):
    """RecBole's ``init_logger``, with a log file of its own for each run of the process (RecBole's configures the
    root logger once per process, so later runs would write into the first run's file). Returns the log file's
    path, or None where logging was configured by someone else (e.g. pytest)."""
    root = logging.getLogger()
    for handler in _RUN_HANDLERS:
        root.removeHandler(handler)
        handler.close()
    _RUN_HANDLERS.clear()
    before = list(root.handlers)
    init_logger(config)
    _RUN_HANDLERS.extend(h for h in root.handlers if h not in before)
    return next((h.baseFilename for h in _RUN_HANDLERS if isinstance(h, logging.FileHandler)), None)


def run_checkpoint_file(config, log_file, default):
    """The run's checkpoint: ``<checkpoint_dir>/<the log file's name>.pth``, so that a checkpoint and its log share
    one id (``<Model>-<dataset>-<time>-<hash of the settings>``); a random suffix where a file of that name exists
    (two runs of the same settings in the same second). ``default`` without a log file."""
    if log_file is None:
        return default
    path = os.path.join(config["checkpoint_dir"], Path(log_file).stem + ".pth")
    while os.path.exists(path):
        path = os.path.join(config["checkpoint_dir"], f"{Path(log_file).stem}-{secrets.token_hex(3)}.pth")
    return path


@refusing_recbole_errors
def validate_run(model, dataset, config_file_list=None, config_dict=None, preset=None, resume=None,
                 pretrained=None, checkpoint=None):
    """Every check of a run, with nothing left on disk: a dataset build it makes is undone if a check fails.

    Returns ``(config, dataset, (train, valid, test), model, trainer class, tensors taken from pretrained)``.
    """
    with undo_on_error():  # a refused run removes the dataset build it made (data/prepare.py)
        config = make_config(model, dataset, config_file_list, config_dict, preset)
        use_threads(config)
        if resume and checkpoint:
            raise RecBoleRobustError("--resume and --checkpoint exclude each other")
        loaded = {path: load_checkpoint(path, "cpu", model=config["model"]) for path in (resume, checkpoint) if path}
        if resume and not os.path.isfile(best_checkpoint_file(resume)):
            raise RecBoleRobustError(f"--resume {resume}: the run's best checkpoint {best_checkpoint_file(resume)} "
                                     "is not beside it")
        check_output_folders(config, resume)
        refuse_pickled_caches(config)
        dataset, train_data, valid_data, test_data = load_data(config)
        check_data_options(config, dataset, train_data, test_data)
        model = build_model(config, train_data)
        for path, saved in loaded.items():
            check_compatible(path, saved, config, model, resume=path == resume)
        trainer_class = get_trainer(config["MODEL_TYPE"], config["model"])
        check_training_options(trainer_class, config, model)  # invalid adversarial / MG settings fail here
        distributed.check_config(config, trainer_class)  # nproc, world_size ... and what cannot run in several
        check_mixed_precision(config, model, train_data)  # enable_amp: refused where the model cannot
        runs.check_robustness_options(config, model)
        initialised = init_from_checkpoint(model, pretrained, config["device"]) if pretrained else None
    return config, dataset, (train_data, valid_data, test_data), model, trainer_class, initialised


def prepare_run(model, dataset, config_file_list=None, config_dict=None, preset=None, resume=None,
                pretrained=None, checkpoint=None, validated=None):
    """Everything a run needs, validated (``validate_run``, or its result ``validated``) before the logger writes
    anything. In a worker of ``nproc`` only rank 0 logs.

    Returns ``(config, dataset, (train, valid, test), trainer)``.
    """
    config, dataset, data, model, trainer_class, initialised = validated or validate_run(
        model, dataset, config_file_list, config_dict, preset, resume, pretrained, checkpoint)
    if distributed.wanted(config) and not distributed.in_worker():
        raise RecBoleRobustError("nproc > 1 is for training runs (run_recbole_robust, the train and report "
                                 "commands); this step runs in one process")
    logger = getLogger()
    log_file = None
    if distributed.is_main():
        log_file = start_logging(config)
        for path in remove_stale_temporaries(config["checkpoint_dir"]):
            logger.info(f"Removed {path}, left by a run that was killed while writing it")
    else:
        logger.setLevel(logging.ERROR)
    logger.info(sys.argv)
    logger.info(config)
    logger.info(dataset)
    logger.info(model)
    logger.info(threads_line(config))
    trainer = trainer_class(config, model)
    if not resume:
        trainer.saved_model_file = run_checkpoint_file(config, log_file, trainer.saved_model_file)
    if config["valid_attack"]:
        trainer.validation_hooks.append(runs.attacked_validation)
    if pretrained:
        shared, missing = initialised
        trainer.adv_start_epoch = 0
        logger.info(f"Initialised {len(shared)} tensors from {pretrained}" + (f"; not in it: {missing}" if missing else ""))
    if resume:
        trainer.resume_checkpoint(resume)
    if not checkpoint:
        trainer.log_stages()
    return config, dataset, data, trainer


def launch(config, run_args):
    """``run_recbole_robust(**run_args)`` in ``nproc`` processes (``trainer/distributed.py``), once the run has been
    validated here; returns rank 0's result (None on a machine other than the first of a multi-machine group). An
    error of a worker is raised here, as one line where it is one."""
    import pickle

    import torch.multiprocessing as mp

    from recbole_robust import errors

    try:
        pickle.dumps(run_args["callback_fn"])
    except Exception:
        raise RecBoleRobustError("callback_fn cannot be sent to the processes of nproc > 1 (define it at the top "
                                 "level of a module)") from None
    address = {"ip": config["ip"], "port": config["port"] or distributed.free_port(),
               "world_size": distributed.world_size(config), "group_offset": config["group_offset"],
               "backend": config["backend"]}
    queue = mp.get_context("spawn").SimpleQueue()
    crash = None
    try:
        mp.start_processes(distributed.worker_entry, args=(address, run_recbole_robust, run_args, queue),
                           nprocs=config["nproc"], join=True, start_method="spawn")
    except (mp.ProcessRaisedException, mp.ProcessExitedException) as e:
        crash = e
    result, error = None, None
    while not queue.empty():
        kind, value = queue.get()
        if kind == "result":
            result = value
        elif error is None:
            error = value
    if error is not None:
        name, message = error
        cls = getattr(errors, name, None)
        if name == "KeyboardInterrupt":
            raise KeyboardInterrupt
        if isinstance(cls, type) and issubclass(cls, RecBoleRobustError):
            raise cls(message)
    if crash is not None:
        raise crash
    return result


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
        ``saved_model_file``, and ``analyses``: ``{name: Result}`` of every attack and analysis the settings ask
        for (``robustness/analyses/``; empty when none). With ``nproc`` / ``world_size`` > 1: rank 0's, and None on
        a machine other than the first of a multi-machine group.
    """
    run_args = dict(model=model, dataset=dataset, config_file_list=config_file_list, config_dict=config_dict,
                    saved=saved, preset=preset, resume=resume, pretrained=pretrained, checkpoint=checkpoint,
                    callback_fn=callback_fn)
    validated = None
    if not distributed.in_worker():
        validated = validate_run(model, dataset, config_file_list, config_dict, preset, resume, pretrained, checkpoint)
        if distributed.wanted(validated[0]):  # nproc > 1: validated here, run by the workers
            config, validated = validated[0], None
            return launch(config, run_args)
    config, _, (train_data, valid_data, test_data), trainer = prepare_run(
        model, dataset, config_file_list, config_dict, preset, resume, pretrained, checkpoint, validated)
    logger = getLogger()
    if checkpoint:
        best_valid_score, best_valid_result = None, None
        test_result = trainer.evaluate(test_data, model_file=checkpoint, show_progress=config["show_progress"])
        saved_model_file = checkpoint
    else:
        try:
            best_valid_score, best_valid_result = trainer.fit(
                train_data, valid_data, saved=saved, show_progress=config["show_progress"], callback_fn=callback_fn
            )
        except KeyboardInterrupt:
            last = last_checkpoint_file(trainer.saved_model_file)
            raise Interrupted(f"interrupted; the last complete checkpoint is {last} (continue with --resume={last})"
                              if saved and os.path.isfile(last) else
                              "interrupted before the first checkpoint was written") from None
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
    if distributed.in_worker():  # attacks and analyses run in rank 0 alone, in one process, on the whole data
        main = distributed.is_main()
        trainer.leave_group()
        if not main:
            return result
    result["analyses"] = runs.run_analyses(config, trainer, train_data, test_data)
    return result
