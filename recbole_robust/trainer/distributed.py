"""Training in several processes with ``torch.distributed``: gloo on the CPU, nccl on GPUs.

RecBole's own multi-process training (``run_recboles``) is nccl-only, wraps the model in
``DistributedDataParallel`` and arms its reducer with a dummy forward pass before RecBole's one backward
pass a batch, so the plugin's other backward passes (Mirror Gradient's second step, SAM's first pass,
the adversary's gradient) would not be reduced; its evaluation runs on a ``DistributedSampler`` that
repeats users to even the shards. Here RecBole's single-process machinery stays on (``single_spec``) and
this module does the distributed part, in one place:

* **Data.** Every rank iterates the same global batches (RecBole's loader, its shuffling generator and
  its negative sampler, seeded alike), and keeps a contiguous ``1/world_size`` share of each
  (``shard_batches``): the union of the shards of a step is the batch one process would train on,
  negatives included. A batch smaller than the world gives the ranks without a row of their own a copy
  of one (as ``DistributedSampler`` pads); it weighs in with its row count.
* **Gradients** (``GradientSync``): at the end of every backward pass (a callback queued on the
  autograd engine, as ``DistributedDataParallel`` does), the parameters' gradients are averaged over the
  ranks, weighted by each rank's rows, in one all-reduce. That covers RecBole's step, Mirror Gradient's
  second step and both passes of SAM (so every rank takes the same perturbation). The adversary's
  gradient is taken with ``torch.autograd.grad``, not accumulated, and is averaged by
  ``GradientSync.average`` (``perturb/engine.py``), so every rank takes the same perturbation too. A
  parameter no rank reached keeps ``grad = None``, as in one process.
* **State.** Ranks start from rank 0's weights (``broadcast_state``) and, at the start of every epoch,
  from rank 0's random number generators (``broadcast_rng``): the model-level random draws of an epoch
  (FREEDOM's edge pruning, DRAGON's sampled user graph) are the same on every rank.
* **Evaluation** (``sharded_evaluation``): each rank scores a contiguous share of the evaluation batches;
  the collected top-k data are gathered in batch order, so every rank computes the metrics over all
  users, each user once, exactly as one process does.
* **Output.** Rank 0 alone writes logs, TensorBoard files and checkpoints.

The launcher is ``quick_start.run_recbole_robust`` (``--nproc``); this module joins the group
(``join_group``, from ``PluginConfig``) and holds the collective operations.
"""
import contextlib
import itertools
import socket
import struct

import numpy as np
import torch
import torch.distributed as dist

from recbole_robust import settings
from recbole_robust.errors import RecBoleRobustError

BACKENDS = ("gloo", "nccl")

SETTINGS = {
    "nproc": settings.POSITIVE_INT,
    "world_size": (lambda v: v == -1 or settings.positive_int(v), "an integer >= 1 (or -1: nproc)"),
    "group_offset": (lambda v: settings.is_int(v) and v >= 0, "an integer >= 0"),
    "ip": (lambda v: isinstance(v, str) and v != "" and not any(c.isspace() for c in v), "a host name or address"),
    "port": (lambda v: v is None or settings.is_int(v) and 0 < v < 65536, "a port number 1-65535 (or ~: a free one)"),
    "backend": (lambda v: v is None or v in BACKENDS, "gloo, nccl or ~ (by device: nccl on GPUs, gloo on the CPU)"),
}
"""Multi-process settings (RecBole's names, ``group_offset`` as its launcher calls it)."""

_WORKER = {}
"""Set in a worker process by ``worker_entry``: its local rank and the group's address."""


def in_worker():
    return bool(_WORKER)


def world():
    """``(rank, size)`` of this process's group; ``(0, 1)`` outside one."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def is_distributed():
    return world()[1] > 1


def is_main():
    return world()[0] == 0


def world_size(config):
    return config["nproc"] if config["world_size"] == -1 else config["world_size"]


def wanted(config):
    """Whether ``config`` asks for more than one process."""
    return config["nproc"] > 1 or world_size(config) > 1


def check_config(config, trainer_class):
    """The multi-process settings and what cannot run in several processes: one-line errors, before anything
    is written (``quick_start.validate_run``)."""
    settings.check_config(config, SETTINGS)
    if not wanted(config):
        return
    size, nproc = world_size(config), config["nproc"]
    if size < nproc:
        raise RecBoleRobustError(f"world_size {size} is smaller than nproc {nproc}")
    if config["group_offset"] + nproc > size:
        raise RecBoleRobustError(f"group_offset {config['group_offset']} + nproc {nproc} exceeds world_size {size}")
    if size > nproc and config["port"] is None:
        raise RecBoleRobustError("a group over several machines (world_size > nproc) needs ip and port: the address "
                                 "of the machine with group_offset 0")
    device = torch.device(config["device"])
    backend = config["backend"] or ("nccl" if device.type == "cuda" else "gloo")
    if backend == "nccl" and device.type != "cuda":
        raise RecBoleRobustError("backend nccl needs GPUs; on the CPU use gloo (the default there)")
    if device.type == "cuda" and torch.cuda.device_count() < nproc:
        raise RecBoleRobustError(f"nproc {nproc} needs a GPU each: {torch.cuda.device_count()} visible (gpu_id)")
    loop = next(cls for cls in trainer_class.__mro__ if "_train_epoch" in vars(cls) and cls.__name__ != "RobustMixin")
    if loop.__module__ != "recbole.trainer.trainer" or loop.__name__ != "Trainer":
        raise RecBoleRobustError(f"nproc > 1 needs RecBole's training loop, which {loop.__name__} replaces "
                                 f"({config['model']} trains in one process)")
    if str(config["learner"]).lower() == "sparse_adam":
        raise RecBoleRobustError("learner sparse_adam cannot train in several processes (its gradients are sparse); "
                                 "use adam")
    if config["valid_attack"]:
        raise RecBoleRobustError("valid_attack cannot run with nproc > 1; attacks and analyses after training run "
                                 "in rank 0 on the whole data")


def free_port():
    """A TCP port free on this machine now (for a group on one machine)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def worker_entry(local_rank, address, function, kwargs, queue):
    """A worker process: join the group (through ``PluginConfig``) and run ``function(**kwargs)``; rank 0 puts its
    result, any rank its error (class name and message) in ``queue``."""
    _WORKER.update(address, local_rank=local_rank)
    if local_rank + address["group_offset"] != 0:
        silence_output()
    try:
        result = function(**kwargs)
        if local_rank + address["group_offset"] == 0:
            queue.put(("result", result))
    except BaseException as e:
        queue.put(("error", (type(e).__name__, str(e).splitlines()[0] if str(e) else type(e).__name__)))
        if isinstance(e, (RecBoleRobustError, KeyboardInterrupt)):  # the launcher raises it as one line
            raise SystemExit(1) from None
        raise  # a crash: its traceback is printed
    finally:
        leave_group()


def join_group(config_dict):
    """In a worker, join the process group and set the rank's device; called by ``PluginConfig`` once RecBole has
    chosen the device. Outside a worker, nothing."""
    if not _WORKER:
        return
    local_rank = _WORKER["local_rank"]
    device = config_dict["device"]
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    backend = _WORKER["backend"] or ("nccl" if device.type == "cuda" else "gloo")
    if not dist.is_initialized():
        dist.init_process_group(backend, init_method=f"tcp://{_WORKER['ip']}:{_WORKER['port']}",
                                rank=_WORKER["group_offset"] + local_rank, world_size=_WORKER["world_size"])
    config_dict.update(device=device, local_rank=local_rank)
    if dist.get_rank() != 0:
        config_dict.update(show_progress=False, state="error")


def leave_group():
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


class _NoWriter:
    """TensorBoard's ``SummaryWriter`` of ranks other than 0: writes nothing."""

    def __getattr__(self, name):
        return lambda *args, **kwargs: None


def silence_output():
    """Ranks other than 0 write no TensorBoard files (RecBole's trainer makes a writer in ``__init__``)."""
    import recbole.trainer.trainer

    recbole.trainer.trainer.get_tensorboard = lambda logger: _NoWriter()


def _comm_device():
    return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")


def broadcast_state(model):
    """Every rank takes rank 0's parameters and saved buffers (its ``state_dict``; the buffers a model does not save,
    graphs and features, are built from the data, alike on every rank)."""
    if not is_distributed():
        return
    with torch.no_grad():
        for tensor in model.state_dict().values():
            if tensor.layout == torch.strided and tensor.numel():
                dist.broadcast(tensor, src=0)


def broadcast_rng():
    """Every rank takes rank 0's torch, CUDA, NumPy and Python random generators (``checkpoint.rng_state``, packed
    into one int64 tensor for the broadcast, restored by ``checkpoint.set_rng_state``)."""
    if not is_distributed():
        return
    from recbole_robust.trainer.checkpoint import rng_state, set_rng_state

    state = rng_state()
    n, p = state["numpy"], state["python"]
    floats = np.frombuffer(struct.pack("<2d", n["cached_gaussian"], p["gauss"] or 0.0), dtype=np.int64).tolist()
    head = torch.tensor([n["pos"], n["has_gauss"], p["version"], p["gauss"] is not None, *floats])
    parts = [state["torch"], *state["cuda"], n["keys"], torch.tensor(p["state"]), head]
    flat = torch.cat([t.to(torch.int64) for t in parts]).to(_comm_device())
    dist.broadcast(flat, src=0)
    torch_state, *cuda, keys, python, head = flat.cpu().split([len(t) for t in parts])
    pos, has_gauss, version, has_python_gauss, *bits = head.tolist()
    cached, gauss = struct.unpack("<2d", np.array(bits, dtype=np.int64).tobytes())
    set_rng_state({"torch": torch_state.to(torch.uint8), "cuda": [c.to(torch.uint8) for c in cuda],
                   "numpy": {"keys": keys, "pos": pos, "has_gauss": has_gauss, "cached_gaussian": cached},
                   "python": {"version": version, "state": python.tolist(), "gauss": gauss if has_python_gauss else None}})


def average_losses(total_loss):
    """An epoch's summed loss (a float or a tuple), averaged over the ranks: the loss of the global batches."""
    if not is_distributed() or total_loss is None:
        return total_loss
    values = torch.tensor(total_loss if isinstance(total_loss, tuple) else [total_loss], dtype=torch.float64,
                          device=_comm_device())
    dist.all_reduce(values)
    values = (values / dist.get_world_size()).tolist()
    return tuple(values) if isinstance(total_loss, tuple) else values[0]


class GradientSync:
    """Averages the gradients of ``params`` over the ranks at the end of every backward pass (module docstring).

    ``rows`` is the number of rows of the batch the current loss was computed on: the ranks' gradients are
    weighted by it, so a batch that does not split evenly gives the gradient of the whole batch.
    """

    def __init__(self, params):
        self.params = [p for p in params if p.requires_grad]
        self.rows = 1
        self._queued = False
        self._handles = [p.register_post_accumulate_grad_hook(self._accumulated) for p in self.params]

    def close(self):
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def _accumulated(self, param):
        if not self._queued:
            self._queued = True
            torch.autograd.Variable._execution_engine.queue_callback(self._reduce_grads)

    def _reduce_grads(self):
        self._queued = False
        grads, used = self.average([p.grad for p in self.params], shapes=[p.shape for p in self.params])
        with torch.no_grad():
            for p, grad, reached in zip(self.params, grads, used):
                if not reached:
                    p.grad = None
                elif p.grad is None or p.grad.is_sparse:
                    p.grad = grad.to(p.dtype)
                else:
                    p.grad.copy_(grad)

    def average(self, tensors, shapes=None):
        """``tensors`` averaged over the ranks, weighted by ``rows``; one all-reduce. A ``None`` (this rank has no
        gradient there) counts as zeros of ``shapes[i]``. Returns ``(averages, reached)``; ``reached[i]`` is
        False where no rank had the tensor (its average is then zeros)."""
        shapes = shapes or [t.shape for t in tensors]
        device = _comm_device()
        numels = [int(np.prod(s)) for s in shapes]
        flat = torch.zeros(sum(numels) + len(tensors) + 1, dtype=torch.float32, device=device)
        offset = 0
        for i, (t, numel) in enumerate(zip(tensors, numels)):
            if t is not None:
                flat[offset:offset + numel] = (t.to_dense() if t.is_sparse else t).reshape(-1).to(device) * self.rows
                flat[sum(numels) + i] = 1.0
            offset += numel
        flat[-1] = self.rows
        dist.all_reduce(flat)
        total = flat[-1]
        averages, offset = [], 0
        for t, numel, shape in zip(tensors, numels, shapes):
            target = t.device if t is not None else self.params[0].device if self.params else device
            averages.append((flat[offset:offset + numel] / total).view(shape).to(target))
            offset += numel
        reached = (flat[sum(numels):sum(numels) + len(tensors)] > 0).tolist()
        return averages, reached

    def average_list(self, tensors):
        """``average`` for tensors every rank has (the adversary's gradients)."""
        return self.average(tensors)[0]

    def counted(self, loss_func):
        """``loss_func`` that records the rows of each batch it is called on."""
        def loss(interaction):
            self.rows = len(interaction)
            return loss_func(interaction)

        return loss


def shard_batches(train_data):
    """Make ``train_data`` (a RecBole training loader) yield this rank's contiguous share of each global batch.

    RecBole's loader still draws the global batch (same shuffle and negatives on every rank: the generators are
    alike); its collate function is wrapped once.
    """
    if not is_distributed() or hasattr(train_data, "_unsharded_collate"):
        return
    rank, size = world()
    collate = train_data.collate_fn

    def shard(index):
        batch = collate(index)
        n = len(batch)
        lo, hi = n * rank // size, n * (rank + 1) // size
        rows = torch.arange(lo, hi) if hi > lo else torch.tensor([rank % n])
        return batch[rows]

    train_data._unsharded_collate = collate
    train_data.collate_fn = shard


def unshard_batches(train_data):
    """Undo ``shard_batches``: whole batches again (for the attacks and analyses after training, in rank 0)."""
    if hasattr(train_data, "_unsharded_collate"):
        train_data.collate_fn = train_data._unsharded_collate
        del train_data._unsharded_collate


_GATHERED = ("rec.items", "rec.topk", "rec.meanrank", "rec.score", "data.label")
"""The per-batch data RecBole's ``Collector`` concatenates (``eval_batch_collect``)."""
_DTYPES = (torch.float32, torch.float64, torch.int64, torch.int32, torch.bool, torch.float16, torch.bfloat16,
           torch.uint8)


def _gather_rows(tensor):
    """``tensor`` (a 1- or 2-dimensional tensor, or None on a rank without batches) of every rank, concatenated
    in rank order; None where no rank has one."""
    device = _comm_device()
    size = dist.get_world_size()
    head = torch.tensor([-1, 0, 0, 0] if tensor is None else
                        [_DTYPES.index(tensor.dtype), tensor.dim(), tensor.shape[0],
                         tensor.shape[1] if tensor.dim() > 1 else 1], dtype=torch.int64, device=device)
    heads = [torch.zeros_like(head) for _ in range(size)]
    dist.all_gather(heads, head)
    heads = [h.tolist() for h in heads]
    known = [h for h in heads if h[0] >= 0]
    if not known:
        return None
    dtype, ndim, _, cols = known[0]
    longest = max(h[2] for h in heads)
    padded = torch.zeros(longest, cols, dtype=torch.float64, device=device)
    if tensor is not None:
        padded[:tensor.shape[0]] = tensor.reshape(tensor.shape[0], cols).to(device, torch.float64)
    pieces = [torch.zeros_like(padded) for _ in range(size)]
    dist.all_gather(pieces, padded)
    rows = torch.cat([piece[:h[2]] for piece, h in zip(pieces, heads)]).cpu().to(_DTYPES[dtype])
    return rows if ndim > 1 else rows.reshape(-1)


@contextlib.contextmanager
def sharded_evaluation(trainer, eval_data):
    """For one ``evaluate`` of ``trainer``: this rank scores its contiguous share of ``eval_data``'s batches, and
    the collector's data of all ranks are gathered before the metrics are computed (module docstring)."""
    if not is_distributed() or not eval_data:
        yield
        return
    rank, size = world()
    n = len(eval_data)
    lo, hi = n * rank // size, n * (rank + 1) // size
    counter = itertools.count()
    collector = trainer.eval_collector
    originals = {name: getattr(trainer, name) for name in ("_full_sort_batch_eval", "_neg_sample_batch_eval")}

    def mine(function):
        def evaluate_batch(batched_data):
            if lo <= next(counter) < hi:
                return function(batched_data)
            return None, None, None, None

        return evaluate_batch

    collect, get_data_struct = collector.eval_batch_collect, collector.get_data_struct

    def collect_mine(scores, interaction, positive_u, positive_i):
        if scores is not None:
            collect(scores, interaction, positive_u, positive_i)

    def gathered_data_struct():
        data = collector.data_struct._data_dict
        for key in _GATHERED:
            rows = _gather_rows(data.get(key))
            if rows is not None:
                data[key] = rows
        return get_data_struct()

    for name, function in originals.items():
        setattr(trainer, name, mine(function))
    collector.eval_batch_collect, collector.get_data_struct = collect_mine, gathered_data_struct
    try:
        yield
    finally:
        for name in originals:
            delattr(trainer, name)
        del collector.eval_batch_collect, collector.get_data_struct
