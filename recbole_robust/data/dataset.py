"""RecBole ``Dataset`` with item content features, used by the plugin's multimodal models."""
import os

from recbole.data.dataset import Dataset

from recbole_robust.data.features import ItemFeatureStore
from recbole_robust.errors import RecBoleRobustError


def load_item_features(config, item_tokens):
    """Build the ``ItemFeatureStore`` of the dataset named by ``config``, or fail saying what is missing."""
    model, name = config["model"], config["dataset"]
    files = config["feature_files"] or {}
    if not files:
        raise RecBoleRobustError(
            f"{model} needs item content features, but dataset '{name}' has none (no feature_files in its config)"
        )
    folder = config["feature_path"] or config["data_path"]
    missing = [f for f in files.values() if not os.path.isfile(os.path.join(folder, f))]
    if missing:
        hint = f"; {config['feature_release']}" if config["feature_release"] else ""
        raise RecBoleRobustError(
            f"{model} needs item content features of dataset '{name}': {', '.join(missing)} not found in {folder}{hint}"
        )
    return ItemFeatureStore.from_files(
        folder, files, item_tokens, feature_tokens=config["feature_tokens"], expected_rows=config["feature_rows"]
    )


class MultimodalDataset(Dataset):
    """RecBole's Dataset plus ``item_features`` (an ``ItemFeatureStore``), loaded once per run.

    RecBole's ``create_dataset`` picks it for a model ``M`` through ``recbole.data.dataset.MDataset``,
    which ``registry.py`` sets for every plugin model that declares ``needs_item_features``.
    """

    def __init__(self, config):
        super().__init__(config)
        self.item_features = load_item_features(config, self.field2id_token[self.iid_field])
