"""The plugin models' RecBole ``Dataset``: the graphs of a split's interactions (``GraphDataset``), and item
content features (``MultimodalDataset``)."""
import os

from recbole.data.dataset import Dataset

from recbole_robust.data import graphs
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


class GraphDataset(Dataset):
    """RecBole's Dataset plus the graphs of its interactions, each built once per split (as RecBole-GNN's dataset
    builds its graph): a model is given its training split and asks it for the graphs it propagates over.

    RecBole's ``create_dataset`` picks it for a plugin model ``M`` through ``recbole.data.dataset.MDataset``,
    which ``registry.py`` sets for every plugin model (``MultimodalDataset`` for those that declare
    ``needs_item_features``).
    """

    def copy(self, new_inter_feat):
        split = super().copy(new_inter_feat)  # a shallow copy: the split builds graphs of its own
        split._graphs = {}
        return split

    def _graph(self, name, build):
        graphs_of = self.__dict__.setdefault("_graphs", {})
        if name not in graphs_of:
            graphs_of[name] = build()
        return graphs_of[name]

    def interaction_edges(self):
        """``(users, items)`` LongTensors of the interactions (RecBole ids)."""
        return self._graph("edges", lambda: graphs.user_item_edges(self))

    def norm_adjacency(self):
        """D^-1/2 A D^-1/2 of the user-item graph, (n_users + n_items)^2, CSR (items offset by the users)."""
        return self._graph("norm_adjacency", lambda: graphs.norm_adjacency(
            *self.interaction_edges(), self.user_num, self.item_num).to_sparse_csr())

    def user_cooccurrence(self, top):
        """DRAGON's / DualGNN's user co-occurrence graph (``graphs.user_cooccurrence_graph``: each user's ``top``
        users with the most items in common) as CSR arrays ``(indptr, neighbours, counts)``, cached on disk beside
        the dataset's build (``graphs.cached_graph``: per split and ``top``)."""
        users, items = (t.numpy() for t in self.interaction_edges())
        n_users, n_items = self.user_num, self.item_num

        def build():
            stored = graphs.cached_graph(
                self.config, "user_cooccurrence", [users, items, n_users, n_items, top],
                lambda: dict(zip(("indptr", "neighbours", "counts"),
                                 graphs.user_cooccurrence_graph(users, items, n_users, n_items, top))),
                lambda arrays: graphs.valid_user_graph(arrays, n_users))
            return stored["indptr"], stored["neighbours"], stored["counts"]

        return self._graph(f"user_cooccurrence-{top}", build)


class MultimodalDataset(GraphDataset):
    """``GraphDataset`` plus ``item_features`` (an ``ItemFeatureStore``), loaded once per run."""

    def __init__(self, config):
        super().__init__(config)
        self.item_features = load_item_features(config, self.field2id_token[self.iid_field])
