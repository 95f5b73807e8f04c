"""The plugin seen through plain RecBole: get_model, Config defaults, run_recbole, built-in models."""
import recbole.trainer
from recbole.config import Config
from recbole.data.dataset import Dataset
from recbole.quick_start import run_recbole
from recbole.trainer import Trainer
from recbole.utils import ModelType, get_model, get_trainer

from recbole_robust.data import MultimodalDataset
from recbole_robust.model.general_recommender import VBPR
from recbole_robust.registry import get_trainer as robust_get_trainer
from recbole_robust.trainer import RobustTrainer, RobustMixin


def test_recbole_lookups_find_plugin_model_trainer_and_dataset():
    assert get_model("VBPR") is VBPR
    assert get_trainer(ModelType.GENERAL, "VBPR") is RobustTrainer
    import recbole.data.dataset as recbole_datasets

    assert recbole_datasets.VBPRDataset is MultimodalDataset
    assert issubclass(MultimodalDataset, Dataset)


def test_plugin_defaults_apply_below_user_settings(build_dir):
    config = Config(model="VBPR", dataset="ml-100k", config_dict={"build_dir": build_dir, "reg_weight": 0.5})
    assert config["content_embedding_size"] == 32  # properties/model/VBPR.yaml
    assert config["reg_weight"] == 0.5  # user value wins
    assert config["feature_files"] == {"text": "text_feat.npy", "genre": "genre_feat.npy"}  # dataset_configs/
    assert config["data_path"].startswith(build_dir)
    assert isinstance(config["reg_weight_e"], float)  # 1e-5 read with RecBole's YAML loader


def test_plain_run_recbole_trains_plugin_model(fast):
    result = run_recbole(model="VBPR", dataset="ml-100k", config_dict=fast)
    assert result["test_result"]["recall@10"] > 0.02  # random ranking: ~0.006


def test_builtin_models_keep_their_trainers_with_safe_checkpoints():
    assert robust_get_trainer(ModelType.GENERAL, "BPR") is RobustTrainer
    recvae = robust_get_trainer(ModelType.GENERAL, "RecVAE")
    assert issubclass(recvae, recbole.trainer.RecVAETrainer) and issubclass(recvae, RobustMixin)
    assert robust_get_trainer(ModelType.GENERAL, "RecVAE") is recvae
    assert issubclass(RobustTrainer, Trainer)
