"""Reuse an expensive all-users / all-items computation across the batches of an evaluation.

RecBole evaluates a batch of users at a time and calls ``full_sort_predict`` (full ranking) or
``predict`` (sampled negatives) for each; a graph model that propagates over the whole graph would
recompute the propagation every batch, so it propagates once per evaluation instead. The
cached value is reused while gradients are off and every parameter and buffer of the model is the
same object at the same version: an optimiser step (in-place, new version) or an injected
perturbation (a new object, ``functional_call``) invalidates it.
"""
import torch


class FullSortCache:
    def __init__(self):
        self._entry = None  # (tensors it was computed from, their versions, value)

    def get(self, module, compute):
        if torch.is_grad_enabled():
            return compute()
        sources = list(module.parameters()) + list(module.buffers())
        versions = [t._version for t in sources]
        entry = self._entry
        if (entry is None or len(entry[0]) != len(sources) or entry[1] != versions
                or any(a is not b for a, b in zip(entry[0], sources))):
            entry = self._entry = (sources, versions, compute())
        return entry[2]


class PropagatedScores:
    """``predict`` and ``full_sort_predict`` of a model whose ``propagate()`` (default: ``forward()``) returns
    (users [n_users, d], items [n_items, d]) and whose score is their dot product: propagated once per
    evaluation (``FullSortCache``, the model's ``_full_sort_cache``). Put it before RecBole's base class."""

    def propagate(self):
        return self.forward()

    def predict(self, interaction):
        users, items = self._full_sort_cache.get(self, self.propagate)
        return (users[interaction[self.USER_ID]] * items[interaction[self.ITEM_ID]]).sum(-1)

    def full_sort_predict(self, interaction):
        users, items = self._full_sort_cache.get(self, self.propagate)
        return (users[interaction[self.USER_ID]] @ items.T).view(-1)


class BPRPropagation(PropagatedScores):
    """``PropagatedScores`` whose training loss starts from BPR on the propagated embeddings: ``bpr(u, pos, neg)``,
    and ``rec_loss`` (the loss an adversary perturbs: BPR alone) over ``training_propagation()`` (default: the
    whole graph's; PGL's: its principal subgraph's). Used by the MMRec models (MGCN, LGMRec, PGL, SMORE)."""

    def training_propagation(self):
        return self.propagate()

    @staticmethod
    def bpr(u, pos, neg):
        return -torch.nn.functional.logsigmoid((u * pos).sum(-1) - (u * neg).sum(-1)).mean()

    def rec_loss(self, interaction):
        user, pos, neg = interaction[self.USER_ID], interaction[self.ITEM_ID], interaction[self.NEG_ITEM_ID]
        users, items = self.training_propagation()
        return self.bpr(users[user], items[pos], items[neg])


def distinct_user_scores(user, item, score_users):
    """``predict`` of a model that scores all items of a user at once (an auto-encoder): RecBole's
    sampled-negative protocols send one row per (user, item) pair, ~100-1000 per user, so each distinct
    user is scored once (``score_users(users) -> [n_distinct, n_items]``) and the pairs gathered from it."""
    users, row = torch.unique(user, return_inverse=True)
    return score_users(users)[row, item]
