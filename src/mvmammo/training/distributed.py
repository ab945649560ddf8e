"""Data-parallel training under torchrun: one process per GPU (or CPU process), one config.

Detection: torchrun sets WORLD_SIZE, RANK and LOCAL_RANK; with WORLD_SIZE unset or 1 everything here is a
no-op and training is the plain single-process loop.

Semantics (what makes "N processes = one process with the same optim.batch_size" true):
  - optim.batch_size is the GLOBAL batch; each rank takes a contiguous slice of batch_size / world rows
    (batch_size must be a multiple of the world size);
  - every rank computes the same epoch order from (seed, epoch) and the same random boxes for the whole
    global batch (then keeps its slice), so the union of the ranks' inputs is the single process's batch;
  - DDP averages gradients over ranks: the mean of per-rank mean losses = the global mean loss;
  - BatchNorm: with run.sync_bn (default) its batch statistics are taken over the global batch
    (torch's SyncBatchNorm on CUDA, :class:`AllReduceBatchNorm2d` on CPU/gloo, where SyncBatchNorm refuses
    CPU tensors). Without it, each rank normalises with its own half-batch statistics: still a valid way
    to train (as in most DDP ResNet recipes), but no longer the single-process computation;
  - a last global batch smaller than the world size is dropped (every rank must take the same steps);
  - rank 0 alone writes the run folder (config, metrics.jsonl, checkpoints); all ranks read last.pt to
    resume. Known differences: input noise and modality-dropout masks are drawn per rank.
"""
from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from datetime import timedelta

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from mvmammo.errors import MvError


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    started_here: bool = False  # whether setup() initialised the process group (then cleanup ends it)

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def shard(self) -> tuple[int, int]:
        return (self.rank, self.world)


def env_info() -> DistInfo:
    """Rank and world size from torchrun's environment variables (a single process when absent)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    return DistInfo(rank=int(os.environ.get("RANK", "0")), world=world,
                    local_rank=int(os.environ.get("LOCAL_RANK", "0")))


def pick_device(name: str) -> torch.device:
    """run.device -> a torch device ("auto": the GPU when one is visible)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def setup(device_name: str) -> tuple[DistInfo, torch.device]:
    """Initialise the process group when WORLD_SIZE > 1 (nccl on CUDA, gloo on CPU); pick the device."""
    info = env_info()
    want_cuda = device_name == "cuda" or (device_name == "auto" and torch.cuda.is_available())
    if not info.enabled:

        return info, pick_device(device_name)
    device = torch.device(f"cuda:{info.local_rank}" if want_cuda else "cpu")
    if want_cuda:
        torch.cuda.set_device(device)
    started = False
    if not dist.is_initialized():
        backend, timeout = "nccl" if want_cuda else "gloo", timedelta(minutes=30)
        store = attempt_store(info, timeout)
        if store is None:
            dist.init_process_group(backend, timeout=timeout)  # env://: MASTER_ADDR/MASTER_PORT
        else:
            dist.init_process_group(backend, store=store, rank=info.rank, world_size=info.world, timeout=timeout)
        started = True
    return DistInfo(info.rank, info.world, info.local_rank, started), device


def attempt_store(info: DistInfo, timeout: timedelta) -> dist.Store | None:
    """The key-value store for init_process_group under torchrun's shared agent store; None: plain env://.

    torchrun's c10d rendezvous hosts one TCPStore in the agent (MASTER_ADDR:MASTER_PORT,
    TORCHELASTIC_USE_AGENT_STORE=True) and keeps it across restarts. init_process_group writes each rank's
    connection address under fixed keys, so after a restart those keys still hold the killed attempt's
    addresses, and a restarted rank that reads them before its peer rewrites them connects to a dead port
    (gloo: "connectFullMesh failed ... Connection refused"; nccl: a stale unique id) or waits forever. Each
    attempt therefore gets its own key prefix. TORCHELASTIC_RESTART_COUNT is the same for all workers of one
    agent, but each agent counts its own restarts (a node restarted because another node failed does not count
    one), so with several nodes the prefix could differ between nodes: there the store must not be shared.
    """
    if os.environ.get("TORCHELASTIC_USE_AGENT_STORE") != "True":
        return None  # not torchrun, or TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1: a fresh store every attempt
    nodes = int(os.environ.get("GROUP_WORLD_SIZE", "1"))
    restarts = int(os.environ.get("TORCHELASTIC_MAX_RESTARTS", "0"))
    if nodes > 1 and restarts > 0:
        raise MvError(f"torchrun with {nodes} nodes and --max-restarts {restarts} keeps one rendezvous store "
                      "across restarts, where restarted workers would read the previous attempt's addresses and "
                      "hang: set TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1 in the environment of every torchrun "
                      "command (see docs/scale.md, 'Restarts and torchrun's shared store')")
    attempt = int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0"))
    client = dist.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), info.world,
                           is_master=False, timeout=timeout)
    return dist.PrefixStore(f"mvmammo/attempt_{attempt}", client)


def cleanup(info: DistInfo) -> None:
    if info.started_here and dist.is_initialized():
        dist.destroy_process_group()


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


@contextlib.contextmanager
def main_first(info: DistInfo):
    """Rank 0 runs the block first (builds the cache, writes the run folder); the others then run it."""
    if info.enabled and not info.main:
        dist.barrier()
    try:
        yield
    finally:
        if info.enabled and info.main:
            dist.barrier()


def shard_bounds(n: int, rank: int, world: int) -> tuple[int, int]:
    """The contiguous slice [lo, hi) of n global rows that rank takes (sizes differ by at most 1)."""
    return (n * rank) // world, (n * (rank + 1)) // world


def global_batches(chunks: list[np.ndarray], info: DistInfo, batch_size: int) -> list[np.ndarray]:
    """Check the global batch splits evenly; drop a final batch too small to give every rank a row."""
    if not info.enabled:
        return chunks
    if batch_size % info.world:
        raise ValueError(f"optim.batch_size={batch_size} is the global batch and must be a multiple of the "
                         f"world size {info.world} (each process takes batch_size / world rows)")
    return [c for c in chunks if len(c) >= info.world]


class AllReduceBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d whose training statistics cover every rank's batch (works on gloo/CPU).

    Sums of x and x^2 per channel (float64, so E[x^2] - E[x]^2 keeps its digits) and the element count are
    all-reduced with the differentiable all_reduce, so gradients flow through the global statistics exactly
    as in a single process holding the whole batch. Running statistics use the unbiased variance, as
    nn.BatchNorm2d does.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(x)
        from torch.distributed.nn.functional import all_reduce

        c = x.shape[1]
        xd = x.double()
        count = torch.full((1,), float(x.numel() // c), dtype=torch.float64, device=x.device)
        stats = all_reduce(torch.cat([xd.sum((0, 2, 3)), (xd * xd).sum((0, 2, 3)), count]))  # (2C + 1,)
        n = stats[-1]
        mean = stats[:c] / n
        var = (stats[c:2 * c] / n - mean * mean).clamp(min=0)
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked += 1
                m = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                self.running_mean.mul_(1 - m).add_(m * mean.to(self.running_mean.dtype))
                unbiased = var * n / (n - 1).clamp(min=1)
                self.running_var.mul_(1 - m).add_(m * unbiased.to(self.running_var.dtype))
        inv = torch.rsqrt(var + self.eps).to(x.dtype)
        y = (x - mean.to(x.dtype)[None, :, None, None]) * inv[None, :, None, None]
        if self.affine:
            y = y * self.weight[None, :, None, None] + self.bias[None, :, None, None]
        return y


def convert_batchnorm(module: nn.Module, cuda: bool) -> nn.Module:
    """Swap every BatchNorm2d for its global-batch version in place, keeping the same parameter and buffer
    tensors (so an optimizer built before, and checkpoints, still match)."""
    if cuda:
        return nn.SyncBatchNorm.convert_sync_batchnorm(module)
    for name, child in list(module.named_children()):
        if isinstance(child, nn.BatchNorm2d) and not isinstance(child, AllReduceBatchNorm2d):
            new = AllReduceBatchNorm2d(child.num_features, child.eps, child.momentum, child.affine,
                                       child.track_running_stats)
            if child.affine:
                new.weight, new.bias = child.weight, child.bias
            if child.track_running_stats:
                new.running_mean, new.running_var = child.running_mean, child.running_var
                new.num_batches_tracked = child.num_batches_tracked
            new.train(child.training)
            setattr(module, name, new)
        else:
            convert_batchnorm(child, cuda)
    return module


def wrap(model: nn.Module, info: DistInfo, device: torch.device, sync_bn: bool = True) -> nn.Module:
    """The module the training step calls: the model itself, or DDP over it (BatchNorm converted first).
    The caller keeps using ``model`` for checkpoints, evaluation and hooks (same parameters)."""
    if not info.enabled:
        return model
    if sync_bn:
        convert_batchnorm(model, device.type == "cuda")
    ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids)


def gather_arrays(info: DistInfo, *arrays: np.ndarray) -> tuple[np.ndarray, ...]:
    """Concatenate each array over ranks (rank order); once per epoch, for train metrics."""
    if not info.enabled:
        return arrays
    got: list = [None] * info.world
    dist.all_gather_object(got, arrays)
    return tuple(np.concatenate([g[i] for g in got]) for i in range(len(arrays)))
