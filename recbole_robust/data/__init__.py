"""Data layer: dataset builders, build cache, item content features."""
from recbole_robust.data.dataset import MultimodalDataset
from recbole_robust.data.features import ItemFeatureStore
from recbole_robust.data.prepare import data_roots, ensure_built

__all__ = ["ItemFeatureStore", "MultimodalDataset", "data_roots", "ensure_built"]
