"""Distributed runs under ``torchrun``: process-group set-up, the rank's device, and sharding.

``torchrun`` sets ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK``; without them a run is a single
process. The backend is NCCL on CUDA and gloo on CPU; each rank uses GPU ``LOCAL_RANK``.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Iterator, Optional, Sequence, TypeVar

import torch
import torch.distributed as dist

from shmoareg.errors import InputError

Item = TypeVar("Item")
_LAUNCH_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK")


@dataclass(frozen=True)
class DistributedContext:
    """This process's place in the run and the device it computes on."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        """Rank 0: the only process that writes files and logs."""
        return self.rank == 0

    @property
    def active(self) -> bool:
        """True when a process group is initialised (launched by torchrun)."""
        return dist.is_available() and dist.is_initialized()

    def barrier(self) -> None:
        """Wait for every rank (no-op in a single process)."""
        if self.active:
            dist.barrier()

    def gather(self, value: Any) -> list[Any]:
        """Every rank's ``value`` (picklable), in rank order, on every rank."""
        if not self.active:
            return [value]
        gathered: list[Any] = [None] * self.world_size
        dist.all_gather_object(gathered, value)
        return gathered


def launched_by_torchrun() -> bool:
    """True when the launcher's environment variables are set."""
    return all(name in os.environ for name in _LAUNCH_VARIABLES)


@contextmanager
def distributed(device: torch.device, backend: str | None = None,
                timeout: Optional[timedelta] = None) -> Iterator[DistributedContext]:
    """Join the process group when launched by torchrun (else a single-process context); leave it after.
    ``timeout`` bounds every collective's wait for the other ranks (torch's default when None)."""
    if not launched_by_torchrun():
        yield DistributedContext(device=device)
        return
    local_rank = int(os.environ["LOCAL_RANK"])
    if device.type == "cuda":
        if local_rank >= torch.cuda.device_count():
            raise InputError(f"torchrun started local rank {local_rank} on this node, which has "
                             f"{torch.cuda.device_count()} GPU(s) for torch; give --nproc_per_node at most the number "
                             "of GPUs, or --device cpu")
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    dist.init_process_group(backend or ("nccl" if device.type == "cuda" else "gloo"), timeout=timeout)
    context = DistributedContext(dist.get_rank(), dist.get_world_size(), local_rank, device)
    try:
        yield context
        context.barrier()
    finally:
        dist.destroy_process_group()


def launch_rank() -> int:
    """This process's rank as torchrun set it (0 outside torchrun), readable before joining the group."""
    return int(os.environ["RANK"]) if launched_by_torchrun() else 0


def cpu_share() -> int:
    """CPU threads for one rank: the cores this process may use, divided by the ranks on this node
    (torchrun's ``LOCAL_WORLD_SIZE``), at least 1."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cores // int(os.environ.get("LOCAL_WORLD_SIZE", "1")))


def shard(items: Sequence[Item], rank: int, world_size: int) -> list[Item]:
    """The items of ``rank`` when ``items`` are dealt round-robin over ``world_size`` ranks."""
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is outside 0..{world_size - 1}")
    return list(items[rank::world_size])
