"""Who this process is in a `torchrun` job, and the few collectives the loop needs.

A single process is rank 0 of a world of 1; every helper here is then a no-op, so the
loop has one code path for one process and for many.
"""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class World:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1
    """Processes of this job on this machine (they share its CPUs)."""

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @classmethod
    def from_env(cls) -> World:
        """Read the variables `torchrun` sets; absent ones mean a single process."""
        try:
            return cls(
                rank=int(os.environ.get("RANK", 0)),
                world_size=int(os.environ.get("WORLD_SIZE", 1)),
                local_rank=int(os.environ.get("LOCAL_RANK", 0)),
                local_world_size=int(os.environ.get("LOCAL_WORLD_SIZE", 1)),
            )
        except ValueError as err:
            raise ValueError(
                f"RANK/WORLD_SIZE/LOCAL_RANK/LOCAL_WORLD_SIZE must be integers: {err}"
            ) from None


def device_for(world: World) -> torch.device:
    """One device per local rank on CUDA; the CPU otherwise."""
    if torch.cuda.is_available():
        torch.cuda.set_device(world.local_rank)
        return torch.device("cuda", world.local_rank)
    return torch.device("cpu")


def init_process_group(world: World, device: torch.device, timeout_s: float = 600.0) -> None:
    """Join the job's process group (NCCL on CUDA, gloo on CPU) from torchrun's environment."""
    if not world.distributed or dist.is_initialized():
        return
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(
        backend=backend,
        rank=world.rank,
        world_size=world.world_size,
        timeout=dt.timedelta(seconds=timeout_s),
    )


def destroy_process_group(finished: bool = False) -> None:
    """Leave the process group (no-op without one).

    `finished=True` (every rank ran to the end): first a barrier, so that no rank tears
    down its gloo connections while a peer may still be finishing its last collective.
    Without it, a rank of a 2-rank gloo test run died at teardown (SIGABRT, "terminate
    called without an active exception") once in about 50 launches; with it, none did in
    130. Not on an error path, where a peer may never reach the barrier.
    """
    if not (dist.is_available() and dist.is_initialized()):
        return
    if finished:
        dist.barrier()
    dist.destroy_process_group()


def all_gather_objects(obj: Any, world: World) -> list[Any]:
    """Every rank's `obj` (picklable), in rank order, on every rank."""
    if not world.distributed:
        return [obj]
    out: list[Any] = [None] * world.world_size
    dist.all_gather_object(out, obj)
    return out


def all_reduce_sum(t: torch.Tensor, world: World) -> torch.Tensor:
    """Sum `t` over ranks in place (no-op for one process) and return it."""
    if world.distributed:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t
