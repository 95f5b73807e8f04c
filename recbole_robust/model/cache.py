"""Reuse an expensive all-users / all-items computation across the batches of a full-sort evaluation.

RecBole evaluates full ranking a few users per batch and calls ``full_sort_predict`` for each; a
model whose item (or graph) representation covers all items would recompute it every batch. The
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
