"""Process bodies for the DDP tests (spawned, so they must live in an importable module)."""

from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.algorithms.ddp_comm_hooks import default_hooks
from torch.nn.parallel import DistributedDataParallel

from src.modelling.training.distributed import destroy_process_group
from tests.helpers import WEIGHTS, fit, tiny_model


def run_training(
    rank: int,
    world_size: int,
    port: int,
    train_batches: list[list],
    val_batches: list[list],
    kwargs: dict,
    out_dir: str,
) -> None:
    """Train on this rank's batches and save parameters and loop state to out_dir/rank{r}.pt.

    With world_size 1 it runs without a process group: the single-process reference.
    The process group is left as `python -m src.modelling.train` leaves it.
    """
    torch.set_num_threads(1)
    if world_size > 1:
        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
        dist.init_process_group("gloo", rank=rank, world_size=world_size)
    finished = False
    try:
        _train_and_save(rank, world_size, train_batches, val_batches, kwargs, out_dir)
        finished = True
    finally:
        destroy_process_group(finished)


def _train_and_save(
    rank: int,
    world_size: int,
    train_batches: list[list],
    val_batches: list[list],
    kwargs: dict,
    out_dir: str,
) -> None:
    model = tiny_model(0)
    opt = torch.optim.SGD(model.parameters(), lr=kwargs.pop("lr", 0.3), momentum=0.9)
    allreduce_calls = [0]
    if world_size > 1:
        # Count gradient all-reduces: DDP must sync once per window, not per micro-batch.
        def counting_hook(_state, bucket):
            allreduce_calls[0] += 1
            return default_hooks.allreduce_hook(None, bucket)

        wrapped = DistributedDataParallel(model)
        wrapped.register_comm_hook(None, counting_hook)
    else:
        wrapped = model
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, factor=0.5, patience=0)
    state = fit(
        wrapped,
        nn.CrossEntropyLoss(weight=WEIGHTS),
        opt,
        scheduler,
        train_batches[rank],
        val_batches[rank],
        kwargs.pop("epochs", 2),
        rank=rank,
        world_size=world_size,
        checkpoint=Path(out_dir) / "best.pth",
        **kwargs,
    ).state
    torch.save(
        {
            "params": [p.detach().clone() for p in model.parameters()],
            "lr": [r["lr"] for r in state.history],
            "val_loss": [r["val_loss"] for r in state.history],
            "best_epoch": state.best_epoch,
            "epochs_run": state.epoch,
            "optimizer_steps": state.optimizer_steps,
            "windows": state.windows_done,
            "allreduce_calls": allreduce_calls[0],
        },
        Path(out_dir) / f"rank{rank}.pt",
    )
