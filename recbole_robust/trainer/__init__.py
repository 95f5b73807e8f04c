"""The plugin's trainers and perturbation engine."""
from recbole_robust.trainer.trainer import RobustMixin, RobustTrainer, init_from_checkpoint, load_checkpoint

__all__ = ["RobustMixin", "RobustTrainer", "init_from_checkpoint", "load_checkpoint"]
