"""Data layer: dataset builders, build cache, item content features."""
from recbole_robust.data.dataset import MultimodalDataset
from recbole_robust.data.features import ItemFeatureStore
from recbole_robust.data.prepare import data_roots, prepare_dataset

__all__ = ["ItemFeatureStore", "MultimodalDataset", "data_roots", "prepare_dataset"]
