"""Strong generalisation (Marlin 2004; Mult-VAE, Liang et al. 2018; the VAEGAN paper's protocol): held-out users.

With ``heldout_users: s`` (``--preset=vaegan_strong``), a share ``s`` of the users (drawn with the run's
seed) is held out, half for validation and half for test; the model trains on the other users only. For
each held-out user, a random ``foldin_ratio`` (80%) of the interactions is *folded in*: given to the
model as the user's input at evaluation (and masked from the ranking), never trained on; the rest are
the targets. ``eval_args.split`` is not used then (order and grouping are this split's).

RecBole has no user split, so the run's dataset gets this ``build`` (the instance's own attribute:
nothing of RecBole changes): the training split holds every interaction of the training users *and* the
held-out users' fold-in interactions (so an auto-encoder reads a held-out user's input row from it, and
full-ranking evaluation masks exactly the fold-in items); ``TrainingUsersDataLoader`` then batches the
training users only. Only models trained on batches of users (RecBole's auto-encoders, VAEGAN) can
encode a user they never trained on; any other model is refused with one line.
"""
import numpy as np
import torch
from recbole.data.dataloader import UserDataLoader

from recbole_robust.errors import RecBoleRobustError


def heldout_split(dataset, share, foldin_ratio, seed):
    """``[train, valid, test]`` datasets of the strong-generalisation protocol (see the module docstring)."""
    dataset._change_feat_format()
    users = dataset.inter_feat[dataset.uid_field].numpy()
    rng = np.random.default_rng(seed)
    present = np.unique(users)
    n_held = int(round(share * len(present)))
    if n_held < 2 or n_held >= len(present):
        raise RecBoleRobustError(f"heldout_users={share} holds out {n_held} of {len(present)} users: "
                                 "need at least 2 held out and 1 to train on")
    shuffled = rng.permutation(present)
    role = np.zeros(dataset.user_num, dtype=np.int64)  # 0 train, 1 valid, 2 test
    role[shuffled[: n_held // 2]] = 1
    role[shuffled[n_held // 2: n_held]] = 2
    # each user's interactions in random order: a random permutation, then a stable sort by user
    order = rng.permutation(len(users))
    order = order[np.argsort(users[order], kind="stable")]
    sorted_users = users[order]
    counts = np.bincount(sorted_users, minlength=dataset.user_num)
    position = np.arange(len(order)) - np.repeat(np.cumsum(counts) - counts, counts)
    n_foldin = np.ceil(foldin_ratio * counts).astype(np.int64)
    user_role = role[sorted_users]
    target = (user_role > 0) & (position >= n_foldin[sorted_users])
    index = [order[~target], order[target & (user_role == 1)], order[target & (user_role == 2)]]
    train, valid, test = (dataset.copy(dataset.inter_feat[torch.from_numpy(np.sort(i))]) for i in index)
    train.training_users = torch.from_numpy(np.flatnonzero((role == 0) & (counts > 0)))
    return [train, valid, test]


def check_heldout(config):
    """``heldout_users`` needs a model trained on batches of users and full ranking (before any data is read)."""
    from recbole.data.utils import get_dataloader

    if not config["heldout_users"]:
        return
    if not issubclass(get_dataloader(config, "train"), UserDataLoader):
        raise RecBoleRobustError(
            f"heldout_users (strong generalisation) needs a model trained on batches of users (MultiVAE, MultiDAE, "
            f"RecVAE, VAEGAN ...); {config['model']} learns a vector per user and cannot encode a held-out one")
    if config["eval_args"]["mode"] not in ("full", {"valid": "full", "test": "full"}):
        raise RecBoleRobustError("heldout_users needs full-ranking evaluation (eval_args mode: full)")


def use_heldout_split(config, dataset):
    """Give ``dataset`` the held-out-user ``build`` when ``heldout_users`` is set."""
    if config["heldout_users"]:
        dataset.build = lambda: heldout_split(dataset, config["heldout_users"], config["foldin_ratio"], config["seed"])


class TrainingUsersDataLoader(UserDataLoader):
    """RecBole's ``UserDataLoader`` over the training users only (``heldout_users``)."""

    def _init_batch_size_and_step(self):
        users = getattr(self._dataset, "training_users", None)
        if users is not None:
            self.user_list = self.user_list[users]
            self.sample_size = len(self.user_list)
        super()._init_batch_size_and_step()
