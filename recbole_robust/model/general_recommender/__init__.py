"""General (user-item) plugin recommenders."""
from recbole_robust.model.general_recommender.vbpr import VBPR

__all__ = ["VBPR"]
