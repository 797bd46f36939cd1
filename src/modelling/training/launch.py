"""A training command's process, set up once: console logging for its rank, the CPU
thread budget, the device and the process group (`saimp train`, `saimp walk-forward`)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import torch

from src.core.logs import setup_console
from src.core.threads import ThreadGovernor, apply_thread_budget
from src.modelling.training.distributed import (
    World,
    destroy_process_group,
    device_for,
    init_process_group,
)


@dataclass(frozen=True)
class Launch:
    world: World
    device: torch.device
    threads: str
    """The thread budget, as a line for the run's header."""
    governor: ThreadGovernor | None


@contextlib.contextmanager
def launched(threads: int | None) -> Iterator[Launch]:
    """Set the process up from the environment (torchrun's or none); on exit leave the
    process group, with a barrier first only when the body ran to its end
    (`destroy_process_group`)."""
    world = World.from_env()
    setup_console(world.rank)
    line, governor = apply_thread_budget(threads, world.local_world_size)
    device = device_for(world)
    init_process_group(world, device)
    finished = False
    try:
        yield Launch(world, device, line, governor)
        finished = True
    finally:
        destroy_process_group(finished)
