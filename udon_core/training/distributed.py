"""Data parallelism under ``torchrun``: which process this is, and the few collectives the trainer needs.

The UDON recipe is data-parallel in one specific way (research/udon.md section 4): every device works on
the same domain at each step (single-domain batches), each holds a slice of the global batch, gradients are
averaged, and the relational loss is computed per device. So all ranks share one sampler schedule (same
seed), each rank loads only its slice of every global batch, and the sampler's loss signal is averaged over
ranks before it is recorded, so the dynamic probabilities stay identical everywhere.

Without ``torchrun`` (no ``WORLD_SIZE`` in the environment) everything here is a no-op for one process, unless
Kubeflow Trainer's torch runtime described the job: it sets ``PET_NNODES``, ``PET_NPROC_PER_NODE``,
``PET_NODE_RANK``, ``PET_MASTER_ADDR`` and ``PET_MASTER_PORT`` on every node for ``torchrun`` (which reads
``PET_<FLAG>`` as each flag's default); a process started without torchrun on a one-process-per-node TrainJob
joins the same group from them (``udon_core.torchrun_env.torch_env``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist

from udon_core.errors import InvalidValueError
from udon_core.torchrun_env import torch_env


@dataclass(frozen=True)
class DistContext:
    """This process's place in the job: global ``rank`` of ``world_size``, ``local_rank`` on its node."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0 writes checkpoints, logs metrics, validates and exports."""
        return self.rank == 0

    def device(self, device: torch.device) -> torch.device:
        """The CUDA device of this rank (``cuda:<local_rank>``) when ``device`` is CUDA, else ``device``."""
        if device.type == "cuda" and self.enabled:
            return torch.device("cuda", self.local_rank)
        return device


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None:
        return default
    try:
        return int(value)
    except ValueError as err:
        raise InvalidValueError(f"environment variable {name}={value!r} is not an integer (set by torchrun)") from err


def init_distributed(device: torch.device, timeout_minutes: int = 60) -> DistContext:
    """Join the process group that ``torchrun`` describes (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR...), or
    that Kubeflow Trainer's ``PET_*`` variables describe for one process per node (``torch_env``).

    NCCL for CUDA, gloo for CPU. Does nothing for a single process or when a group already exists (then
    its rank and size are used). ``timeout_minutes`` bounds how long ranks wait for rank 0's validation.
    """
    if dist.is_available() and dist.is_initialized():
        return DistContext(dist.get_rank(), dist.get_world_size(), _env_int("LOCAL_RANK", 0))
    # env:// rendezvous below reads MASTER_ADDR / MASTER_PORT from here; a no-op when `python -m udon_core.train`
    # already did it (WORLD_SIZE set), which that entry point does first so its log lines name the rank
    os.environ.update(torch_env(os.environ))
    world = _env_int("WORLD_SIZE", 1)
    if world <= 1:
        return DistContext()
    ctx = DistContext(_env_int("RANK", 0), world, _env_int("LOCAL_RANK", 0))
    if device.type == "cuda":
        torch.cuda.set_device(ctx.local_rank)
    backend = "nccl" if device.type == "cuda" else "gloo"
    timeout = timedelta(minutes=timeout_minutes)
    store, _, _ = next(dist.rendezvous("env://", rank=ctx.rank, world_size=world, timeout=timeout))
    # why: after torchrun restarts the workers (--max-restarts, a rank died) the new group can meet in the
    # store of the previous attempt, and gloo then dials the dead ranks' stale addresses. One key space
    # per restart attempt keeps the attempts apart.
    attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
    dist.init_process_group(backend, store=dist.PrefixStore(f"udon/attempt-{attempt}", store), rank=ctx.rank,
                            world_size=world, timeout=timeout)
    return ctx


def current_context() -> DistContext:
    """The context of an initialised process group, or a single process."""
    if dist.is_available() and dist.is_initialized():
        return DistContext(dist.get_rank(), dist.get_world_size(), _env_int("LOCAL_RANK", 0))
    return DistContext()


def mean_over_ranks(value: torch.Tensor, ctx: DistContext) -> torch.Tensor:
    """The mean of a tensor over all ranks (the tensor itself for one process)."""
    if not ctx.enabled:
        return value
    out = value.detach().clone()
    dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out / ctx.world_size


def broadcast_from_main(obj: Any, ctx: DistContext) -> Any:
    """Rank 0's ``obj`` on every rank (picklable objects; used for the validation score)."""
    if not ctx.enabled:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def weights_fingerprint(module: torch.nn.Module) -> torch.Tensor:
    """``[2 * P]`` float64: the sum and the absolute sum of every parameter tensor (equal weights, equal print)."""
    params = [p.detach().double() for p in module.parameters()]
    return torch.stack([t.sum() for t in params] + [t.abs().sum() for t in params])


def check_ranks_agree(module: torch.nn.Module, ctx: DistContext) -> None:
    """Raise when the ranks' weights differ: data parallelism must keep one model on every rank."""
    if not ctx.enabled:
        return
    mine = weights_fingerprint(module)
    device = next(module.parameters()).device
    prints = [torch.empty_like(mine, device=device) for _ in range(ctx.world_size)]
    dist.all_gather(prints, mine.to(device))
    differ = [r for r, p in enumerate(prints) if not torch.equal(p.cpu(), prints[0].cpu())]
    if differ:
        raise RuntimeError(f"rank(s) {differ} hold different weights from rank 0: the data-parallel replicas "
                           "diverged (same domain draws, same optimiser steps and synced gradients are required)")


def shard_size(batch_size: int, ctx: DistContext) -> int:
    """Images per rank of a global batch; the global batch must split evenly over the ranks."""
    if batch_size % ctx.world_size:
        raise InvalidValueError(f"batch_size {batch_size} does not split over {ctx.world_size} processes: "
                         f"use a multiple of {ctx.world_size}")
    return batch_size // ctx.world_size
