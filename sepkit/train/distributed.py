"""Process-group set-up for torchrun (NCCL on GPUs, gloo on CPUs), data sharding and RNG state.

One process per GPU (or per CPU worker in tests), started by ``torchrun`` (see ``utils/train.sh``),
which sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``. Without
those variables training runs as a single process and no process group is created.

Data order is a pure function of ``(seed, epoch)``: the whole run sees the same global batches
whatever the number of processes, and an epoch re-run after a crash sees the same batches again.
"""
import logging
import os
import random
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist

logger = logging.getLogger(__name__)

__all__ = ["DistEnv", "setup", "cleanup", "GlobalBatchSampler", "shard_batches", "all_reduce_sum",
           "broadcast_object", "all_gather_object", "params_digest", "check_params_in_sync", "seed_everything",
           "get_rng_state", "set_rng_state", "epoch_seed"]


@dataclass
class DistEnv:
    """Where this process stands: ``rank`` of ``world_size`` processes, its device and backend."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    backend: str = ""
    owns_group: bool = False  # True when setup() created the process group (and cleanup() ends it)

    @property
    def distributed(self):
        return self.world_size > 1

    @property
    def is_main(self):
        return self.rank == 0


def _pick_device(device, local_rank):
    if device == "cpu":
        return torch.device("cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("device=cuda but torch sees no CUDA device (use --device cpu or utils/train.sh --ngpu 0)")
    if torch.cuda.is_available():
        n = torch.cuda.device_count()
        if local_rank >= n:
            if os.environ.get("SEPKIT_SHARE_GPU", "") != "1":
                raise SystemExit(f"local rank {local_rank} has no GPU: this node has {n} (more processes than "
                                 "GPUs? SEPKIT_SHARE_GPU=1 lets ranks share them, for tests)")
            local_rank %= n
        torch.cuda.set_device(local_rank)
        return torch.device("cuda", local_rank)
    return torch.device("cpu")


def _backend(dev):
    """NCCL on CUDA, gloo on the CPU; ``SEPKIT_DIST_BACKEND=gloo`` forces gloo (it also runs on CUDA
    tensors, e.g. when NCCL refuses two ranks on one GPU)."""
    forced = os.environ.get("SEPKIT_DIST_BACKEND", "")
    if forced not in ("", "nccl", "gloo"):
        raise SystemExit(f"SEPKIT_DIST_BACKEND must be nccl or gloo, got {forced!r}")
    if forced == "nccl" and dev.type != "cuda":
        raise SystemExit("SEPKIT_DIST_BACKEND=nccl needs CUDA devices (--device cuda)")
    return forced or ("nccl" if dev.type == "cuda" else "gloo")


def setup(device="auto"):
    """Join the torchrun process group when there is one; returns a :class:`DistEnv`.

    ``device``: ``auto`` (the local GPU when CUDA is available), ``cpu`` or ``cuda``. The backend is
    NCCL for CUDA and gloo for CPU (``SEPKIT_DIST_BACKEND`` overrides it). With ``SEPKIT_SHARE_GPU=1``
    local ranks beyond the GPU count share GPUs round-robin (DDP checks on one GPU). A process group
    that already exists (e.g. created by a test harness) is reused and left to its owner.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if dist.is_available() and dist.is_initialized():
        world, rank = dist.get_world_size(), dist.get_rank()
    dev = _pick_device(device, local_rank if world > 1 else 0)
    env = DistEnv(rank=rank, world_size=world, local_rank=local_rank, device=dev)
    if world > 1:
        env.backend = _backend(dev)
        if not dist.is_initialized():
            kw = {"device_id": dev} if env.backend == "nccl" else {}
            dist.init_process_group(env.backend, **kw)
            env.owns_group = True
        else:
            env.backend = dist.get_backend()
    return env


def cleanup(env, finished=False):
    """Destroy the process group this process made. After a run that ``finished`` on every rank, the ranks
    first meet at a barrier: a rank that tears gloo down while another still uses it can abort the other
    ("terminate called without an active exception", seen once in a CI run). After an error no barrier
    (the other ranks may never arrive)."""
    if env.owns_group and dist.is_initialized():
        if finished and env.world_size > 1:
            dist.barrier()
        dist.destroy_process_group()


def epoch_seed(seed, epoch, salt=0):
    """A 63-bit seed derived from ``(seed, epoch, salt)`` (independent streams per epoch)."""
    return int(np.random.SeedSequence([seed & 0xFFFFFFFF, epoch, salt]).generate_state(2, np.uint64)[0] >> 1)


class GlobalBatchSampler:
    """Per-process batches of one epoch, sharded from the same global batches on every rank.

    The epoch's permutation of ``n`` items depends on ``(seed, epoch)`` only. Global batch ``k``
    is items ``perm[k*B:(k+1)*B]`` and rank ``r`` of ``W`` takes its ``r``-th slice of ``B/W``
    items, so ``W`` processes with ``B/W`` each step through exactly the batches of one process
    with ``B`` (with DDP's gradient averaging, the same updates). Incomplete last batches are
    dropped so that every rank takes the same number of steps. ``steps`` makes an epoch that many
    batches (passes follow one another, each in a new order; a longer pass is cut), ``max_batches``
    cuts it.
    """

    def __init__(self, n, batch_size, rank=0, world_size=1, seed=0, shuffle=True, max_batches=None, steps=None):
        if batch_size % world_size:
            raise ValueError(f"batch_size={batch_size} (global) does not divide over {world_size} processes")
        self._n, self.batch_size, self.rank, self.world = n, batch_size, rank, world_size
        self.seed, self.shuffle, self.max_batches, self.steps = seed, shuffle, max_batches, steps
        self.epoch = 0

    @property
    def n(self):
        """Number of items (``n`` may be a dataset whose length changes, e.g. with the curriculum)."""
        return len(self._n) if hasattr(self._n, "__len__") else int(self._n)

    def set_epoch(self, epoch):
        self.epoch = epoch

    @property
    def batches_per_pass(self):
        """Full global batches in one pass over the items."""
        return self.n // self.batch_size

    def __len__(self):
        k = self.batches_per_pass
        k = self.steps if self.steps and k else k  # ``steps``: that many batches, in as many passes as needed
        return min(k, self.max_batches) if self.max_batches else k

    def __iter__(self):
        # pass 0 is the epoch's permutation; further passes (``steps``) draw new ones from the same generator
        gen = torch.Generator().manual_seed(epoch_seed(self.seed, self.epoch))
        per, full, todo = self.batch_size // self.world, self.batches_per_pass, len(self)
        while todo > 0:
            perm = torch.randperm(self.n, generator=gen).tolist() if self.shuffle else list(range(self.n))
            for k in range(min(full, todo)):
                start = k * self.batch_size + self.rank * per
                yield perm[start:start + per]
            todo -= full


def shard_batches(n, batch_size, rank=0, world_size=1, max_batches=None):
    """Validation batches of this rank: items ``rank, rank+W, ...`` in batches of ``ceil(B/W)``.

    Every item is seen by exactly one rank (sums are combined with :func:`all_reduce_sum`);
    ranks may get different counts. ``max_batches`` bounds the global number of batches.
    """
    per = max(1, -(-batch_size // world_size))
    items = list(range(rank, n, world_size))
    batches = [items[i:i + per] for i in range(0, len(items), per)]
    return batches[:max_batches] if max_batches else batches


def all_reduce_sum(tensor, env):
    """Sum a tensor over ranks (in place on a copy on ``env.device``); returns it on the CPU."""
    if not env.distributed:
        return tensor
    t = tensor.to(env.device).clone()
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t.cpu()


def broadcast_object(obj, env, src=0):
    if not env.distributed:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def all_gather_object(obj, env):
    if not env.distributed:
        return [obj]
    out = [None] * env.world_size
    dist.all_gather_object(out, obj)
    return out


def params_digest(model):
    """BLAKE2b digest of every parameter's bytes, in order (one host copy of the weights)."""
    import hashlib

    h = hashlib.blake2b(digest_size=16)
    for name, p in model.named_parameters():
        h.update(name.encode())
        h.update(p.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def check_params_in_sync(model, env):
    """Raise unless every rank holds bit-identical parameters; returns the number of tensors checked.

    DDP keeps replicas identical by construction (same initial broadcast, same averaged
    gradients); this catches what breaks that (e.g. a rank-dependent update). Compares digests of
    the raw bytes (:func:`params_digest`), once per epoch.
    """
    n = sum(1 for _ in model.parameters())
    if not env.distributed:
        return n
    digests = all_gather_object(params_digest(model), env)
    bad = [r for r, d in enumerate(digests) if d != digests[0]]
    if bad:
        raise RuntimeError(f"parameters of rank(s) {bad} differ from rank 0's: DDP replicas out of sync")
    return n


def seed_everything(seed):
    random.seed(seed)
    np.random.seed(seed & 0xFFFFFFFF)
    torch.manual_seed(seed)


def get_rng_state():
    """This process's RNG states as plain data (loadable with ``torch.load(weights_only=True)``)."""
    np_state = np.random.get_state()
    py_state = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {"key": np_state[0], "state": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "gauss": float(np_state[4])},
        "python": {"version": py_state[0], "state": list(py_state[1]), "gauss": py_state[2]},
        "cuda": None,
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state):
    torch.set_rng_state(state["torch"].cpu())
    n = state["numpy"]
    np.random.set_state((n["key"], n["state"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    p = state["python"]
    random.setstate((p["version"], tuple(p["state"]), p["gauss"]))
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"].cpu())
