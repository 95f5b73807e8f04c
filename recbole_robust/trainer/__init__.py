"""The plugin's trainers and perturbation engine."""
from recbole_robust.trainer.checkpoint import init_from_checkpoint, load_checkpoint, load_weights
from recbole_robust.trainer.gan import GANTrainer
from recbole_robust.trainer.trainer import RobustMixin, RobustTrainer

TRAINERS = {cls.__name__: cls for cls in (RobustTrainer, GANTrainer)}
"""The trainers a model may name as its ``trainer_class`` (``model/contract.py``)."""

__all__ = ["GANTrainer", "RobustMixin", "RobustTrainer", "TRAINERS", "init_from_checkpoint", "load_checkpoint",
           "load_weights"]
