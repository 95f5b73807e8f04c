"""The one training pipeline: ``run_recbole_robust()``, used by the CLI, by Python callers and by tuning.

It follows RecBole's ``run_recbole`` step by step (Config, seed, dataset, dataloaders, model,
trainer, fit, evaluate) with RecBole's own functions, and adds: plugin model and dataset lookup with
one-line errors, the plugin trainers (safe checkpoints, resume), and a logger that starts only once
the input has been validated, so bad input leaves nothing on disk.
"""
import os
import sys
from logging import getLogger

from recbole.config import Config
from recbole.data import create_dataset, data_preparation
from recbole.utils import init_logger, init_seed, set_color
from tabulate import tabulate

from recbole_robust.data.prepare import check_dataset_exists
from recbole_robust.errors import RecBoleRobustError
from recbole_robust.registry import get_model, get_trainer
from recbole_robust.trainer import load_checkpoint


def make_config(model, dataset, config_file_list=None, config_dict=None):
    """RecBole ``Config`` for a plugin or RecBole model; names and files are checked first."""
    if not model:
        raise RecBoleRobustError("no model given (use --model=<name>)")
    if not dataset:
        raise RecBoleRobustError("no dataset given (use --dataset=<name>)")
    get_model(model)
    for path in config_file_list or []:
        if not os.path.isfile(path):
            raise RecBoleRobustError(f"config file {path} not found")
    config = Config(model=model, dataset=dataset, config_file_list=config_file_list, config_dict=config_dict)
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


def run_recbole_robust(model=None, dataset=None, config_file_list=None, config_dict=None, saved=True,
                       resume=None, callback_fn=None):
    """Train and evaluate ``model`` on ``dataset``, RecBole style.

    Args:
        model (str): plugin or RecBole model name.
        dataset (str): plugin dataset (``dataset_configs/``) or RecBole atomic dataset name.
        config_file_list (list of str): YAML config files.
        config_dict (dict): parameter overrides (above files, below the command line, as RecBole).
        saved (bool): save checkpoints (best model, and the resumable ``.last.pth`` state).
        resume (str): checkpoint to continue training from.
        callback_fn (callable): ``callback_fn(epoch_idx, valid_score)`` after every validation.

    Returns:
        dict: ``best_valid_score``, ``valid_score_bigger``, ``best_valid_result``, ``test_result``,
        ``saved_model_file``.
    """
    config = make_config(model, dataset, config_file_list, config_dict)
    if resume:
        load_checkpoint(resume, model=config["model"])  # fail before anything is written
    dataset, train_data, valid_data, test_data = load_data(config)

    init_logger(config)
    logger = getLogger()
    logger.info(sys.argv)
    logger.info(config)
    logger.info(dataset)

    model = build_model(config, train_data)
    logger.info(model)
    trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, model)
    if resume:
        trainer.resume_checkpoint(resume)
    best_valid_score, best_valid_result = trainer.fit(
        train_data, valid_data, saved=saved, show_progress=config["show_progress"], callback_fn=callback_fn
    )
    test_result = trainer.evaluate(test_data, load_best_model=saved, show_progress=config["show_progress"])

    logger.info(set_color("best valid ", "yellow") + f": {best_valid_result}")
    logger.info(set_color("test result", "yellow") + f": {test_result}")
    logger.info(f"{config['model']} on {config['dataset']}:\n" + result_table(best_valid_result, test_result))
    return {
        "best_valid_score": best_valid_score,
        "valid_score_bigger": config["valid_metric_bigger"],
        "best_valid_result": best_valid_result,
        "test_result": test_result,
        "saved_model_file": trainer.saved_model_file if saved else None,
    }
