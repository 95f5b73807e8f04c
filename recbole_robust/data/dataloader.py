"""Full-ranking evaluation batched by a memory budget, with no per-user Python loop per batch.

RecBole's ``FullSortEvalDataLoader`` puts ``max(eval_batch_size // n_items, 1)`` users in a batch:
one user per batch on TikTok's 6,710 items with RecBole's default 4,096, so an evaluation is
thousands of tiny ``full_sort_predict`` calls. It also builds each batch's history and positive
index lists with a Python loop over the batch's users.

``BudgetFullSortEvalDataLoader`` (the plugin's pipeline uses it for every model with full-ranking
evaluation, see ``registry.py``) keeps RecBole's dataloader and evaluator and changes two things:

* users per batch = ``eval_memory_mb`` / (n_items x ``BYTES_PER_SCORE``): a batch's scores, the
  history mask and the evaluator's top-k temporaries fit the budget (default by device,
  ``EVAL_MEMORY_MB``: 16 MB on the CPU, about 150 TikTok users a batch, where a larger batch leaves the
  caches; 1 GB on a GPU, where a small batch leaves it idle);
* each user's positive and history items are stored once as CSR arrays, and a batch's index lists
  are gathered with tensor operations.

Two options of the MG preset (the MG release's protocol): ``history_items: train`` masks only the
user's training items at test time (RecBole's default masks the training and validation items), and
``drop_cold_users: True`` leaves valid/test users without a training interaction out of evaluation.

A third concerns training: ``negatives_from: train`` draws uniform negatives from the items of the
training split only (``TrainingItemSampler``), as the release's training loader does; RecBole draws
them from every item, so items that only occur in valid/test (7% of TikTok's) are pushed down as
negatives although they are test positives.
"""
import numpy as np
import torch
from recbole.data.dataloader import FullSortEvalDataLoader, TrainDataLoader
from recbole.sampler import Sampler

from recbole_robust.errors import RecBoleRobustError

# float32 scores + the boolean history mask + RecBole's top-k and positive-matrix temporaries
BYTES_PER_SCORE = 16


EVAL_MEMORY_MB = {"cpu": 16, "cuda": 1024}
"""``eval_memory_mb`` when it is not set, by the device's type (others: the CPU's)."""


def eval_memory_mb(config):
    """The evaluation batch's memory budget: ``eval_memory_mb``, else ``EVAL_MEMORY_MB`` of the run's device."""
    if config["eval_memory_mb"] is not None:
        return config["eval_memory_mb"]
    return EVAL_MEMORY_MB.get(torch.device(config["device"]).type, EVAL_MEMORY_MB["cpu"])


def users_per_batch(memory_mb, n_items):
    return max(1, int(memory_mb * 2**20) // (n_items * BYTES_PER_SCORE))


def _csr(item_lists):
    """Per-user item tensors -> (offsets [n_users + 1], items)."""
    lengths = torch.tensor([0 if items is None else len(items) for items in item_lists], dtype=torch.int64)
    offsets = torch.zeros(len(item_lists) + 1, dtype=torch.int64)
    torch.cumsum(lengths, 0, out=offsets[1:])
    present = [items for items in item_lists if items is not None and len(items)]
    items = torch.cat(present) if present else torch.zeros(0, dtype=torch.int64)
    return offsets, items


def _gather(offsets, items, users):
    """(row in batch, item) pairs of ``users``' items, by tensor operations."""
    starts, ends = offsets[users], offsets[users + 1]
    lengths = ends - starts
    rows = torch.repeat_interleave(torch.arange(len(users)), lengths)
    first = torch.repeat_interleave(starts - torch.cumsum(lengths, 0) + lengths, lengths)
    return rows, items[first + torch.arange(int(lengths.sum()))]


def _training_dataset(sampler, options="drop_cold_users and history_items: train"):
    """The training split a sampler was built from (RecBole's ``Sampler`` keeps all phases)."""
    phases, datasets = getattr(sampler, "phases", None), getattr(sampler, "datasets", None)
    if not phases or "train" not in phases:
        raise RecBoleRobustError(f"{options} need RecBole's train/valid/test sampler")
    return datasets[phases.index("train")]


class BudgetFullSortEvalDataLoader(FullSortEvalDataLoader):
    """RecBole's full-sort evaluation loader, batched by ``eval_memory_mb`` (see the module docstring)."""

    def __init__(self, config, dataset, sampler, shuffle=False):
        if config["drop_cold_users"] or config["history_items"] == "train":
            train = _training_dataset(sampler)
            train_matrix = train.inter_matrix(form="csr")
        if config["drop_cold_users"]:
            warm = torch.from_numpy(np.diff(train_matrix.indptr) > 0)
            dataset = dataset.copy(dataset.inter_feat[warm[dataset.inter_feat[dataset.uid_field]]])
        super().__init__(config, dataset, sampler, shuffle=shuffle)
        self._positive = _csr(self.uid2positive_item)
        if config["history_items"] == "train":
            self._history = (torch.from_numpy(train_matrix.indptr.astype(np.int64)),
                             torch.from_numpy(train_matrix.indices.astype(np.int64)))
        else:
            self._history = _csr(self.uid2history_item)

    def _init_batch_size_and_step(self):
        n_items = self._dataset.item_num
        self.step = users_per_batch(eval_memory_mb(self.config), n_items)
        self.set_batch_size(self.step * n_items)

    def collate_fn(self, index):
        user_df = self.user_df[np.array(index)]
        users = user_df[self.uid_field]
        history_u, history_i = _gather(*self._history, users)
        positive_u, positive_i = _gather(*self._positive, users)
        return user_df, (history_u, history_i), positive_u, positive_i


class TrainingItemSampler(Sampler):
    """RecBole's ``Sampler`` whose uniform negatives are items of the training split only."""

    def __init__(self, phases, datasets, distribution="uniform", alpha=1.0):
        if distribution != "uniform":
            raise RecBoleRobustError(f"negatives_from: train needs uniform negative sampling, got {distribution!r}")
        train = datasets[phases.index("train")]
        self.candidates = np.unique(train.inter_feat[train.iid_field].numpy())
        super().__init__(phases, datasets, distribution=distribution, alpha=alpha)
        counts = np.bincount(train.inter_feat[train.uid_field].numpy())
        if counts.max(initial=0) >= len(self.candidates):
            raise RecBoleRobustError("negatives_from: train: a user has interacted with every training item")

    def _uni_sampling(self, sample_num):
        return self.candidates[np.random.randint(0, len(self.candidates), sample_num)]


class TrainingItemsTrainDataLoader(TrainDataLoader):
    """RecBole's training loader with negatives from the training items (``negatives_from: train``)."""

    def __init__(self, config, dataset, sampler, shuffle=False):
        _training_dataset(sampler, "negatives_from: train")  # one line if the sampler has no train phase
        sampler = TrainingItemSampler(sampler.phases, sampler.datasets, sampler.distribution,
                                      sampler.alpha).set_phase("train")
        super().__init__(config, dataset, sampler, shuffle=shuffle)
