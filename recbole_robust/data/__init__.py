"""Data layer: dataset builders, build cache, item content features, the graphs of a split."""
from recbole_robust.data.dataset import GraphDataset, MultimodalDataset
from recbole_robust.data.features import ItemFeatureStore
from recbole_robust.data.prepare import data_roots, ensure_built

__all__ = ["GraphDataset", "ItemFeatureStore", "MultimodalDataset", "data_roots", "ensure_built"]
