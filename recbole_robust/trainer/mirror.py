"""Mirror Gradient (MG paper, Algorithm 1), as in the authors' released trainer.

On batches with ``batch_idx % mg_interval == 0``:

    backward(alpha1 * L); optimiser step; recompute L on the same batch (same sampled negatives);
    backward(-alpha2 * L); optimiser step

and a normal step on the others. ``alpha1 > alpha2 >= 0`` (section 4: with alpha1 = alpha2 only the
gradient-norm regulariser is left; alpha1 < alpha2 makes the main term an ascent) and
``mg_interval >= 1``.

``MirrorOptimizer`` wraps the optimiser RecBole built (any learner: adam, sgd, adagrad, rmsprop ...)
for the duration of an epoch, so RecBole's own training loop runs unchanged: the loop calls
``zero_grad`` and ``step`` as usual, and ``step`` performs the mirror pair on mirror batches.
"""
from recbole_robust.errors import RecBoleRobustError


def check_mirror_config(alpha1, alpha2, interval):
    if not isinstance(interval, int) or interval < 1:
        raise RecBoleRobustError(f"mg_interval must be an integer >= 1, got {interval!r}")
    if alpha2 < 0:
        raise RecBoleRobustError(f"mg_alpha2 must be >= 0, got {alpha2}")
    if alpha1 <= alpha2:
        raise RecBoleRobustError(f"mg_alpha1 must be greater than mg_alpha2, got alpha1={alpha1} <= alpha2={alpha2}")


class MirrorOptimizer:
    """An optimiser whose ``step`` is Mirror Gradient's step (see the module docstring).

    ``loss_func`` must be the loss the training loop uses; ``record`` wraps it so that the wrapper
    knows the current batch for the recomputation.
    """

    def __init__(self, optimizer, loss_func, alpha1, alpha2, interval):
        check_mirror_config(alpha1, alpha2, interval)
        self.optimizer, self.loss_func = optimizer, loss_func
        self.alpha1, self.alpha2, self.interval = alpha1, alpha2, interval
        self.batch_idx = 0
        self.interaction = None

    def record(self, interaction):
        self.interaction = interaction
        return self.loss_func(interaction)

    def zero_grad(self, set_to_none=True):
        self.optimizer.zero_grad(set_to_none=set_to_none)

    def _params(self):
        return [p for group in self.optimizer.param_groups for p in group["params"] if p.grad is not None]

    def step(self):
        if self.batch_idx % self.interval == 0:
            for p in self._params():
                p.grad.mul_(self.alpha1)
            self.optimizer.step()
            self.optimizer.zero_grad()
            loss = self.loss_func(self.interaction)
            loss = sum(loss) if isinstance(loss, tuple) else loss
            (-self.alpha2 * loss).backward()
            self.optimizer.step()
        else:
            self.optimizer.step()
        self.batch_idx += 1
