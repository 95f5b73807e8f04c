"""The plugin's trainers."""
from recbole_robust.trainer.trainer import RobustTrainer, SafeCheckpointMixin, load_checkpoint

__all__ = ["RobustTrainer", "SafeCheckpointMixin", "load_checkpoint"]
