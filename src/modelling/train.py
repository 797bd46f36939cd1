"""The training loop of SAIMP: `train(...) -> Path`, and `saimp train`
(`python -m src.modelling.train`).

`train()` owns autocast, exact gradient accumulation, DDP, validation, the best
checkpoint, the `last` checkpoint and resume, the scheduler step on validation loss,
early stopping and signals; the machinery lives in `src/modelling/training/`. `main()`
only parses the config, sets up logging and the process group, builds the pieces and
calls it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from src.config import TrainConfig
from src.modelling.checkpointing.manager import CheckpointManager
from src.modelling.observability.hooks import Hooks
from src.modelling.training.signals import RunInterrupted
from src.modelling.training.state import LoopState, TrainingError, TrainResult
from src.modelling.training.trainer import Trainer, resolve_world

__all__ = [
    "CheckpointManager",
    "LoopState",
    "RunInterrupted",
    "TrainConfig",
    "TrainResult",
    "Trainer",
    "TrainingError",
    "main",
    "train",
]

log = logging.getLogger(__name__)


def train(
    model: nn.Module,
    loss: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    train_dl: Iterable[Any],
    val_dl: Iterable[Any],
    num_epochs: int,
    *,
    config: TrainConfig | None = None,
    checkpoints: CheckpointManager | Path | str | None = None,
    hooks: Hooks | None = None,
    device: torch.device | str | None = None,
    rank: int | None = None,
    world_size: int | None = None,
    resume: Path | str | None = None,
) -> Path:
    """Train `model` and return the path of its best checkpoint.

    Each epoch trains over `train_dl` in windows of `config.accumulation_steps`
    micro-batches (the epoch's last window may be shorter), validates over `val_dl`
    without gradients, writes the model's `state_dict` (and a JSON sidecar) when
    `config.select_metric` improves, steps `scheduler` (`ReduceLROnPlateau` on
    validation loss; any other once per epoch), and stops early after
    `config.early_stopping_patience` epochs without improvement.

    Batches are `(x, y, ...)` tuples: x (B, T, F) float, y (B,) int64 class indices.

    Gradient accumulation is exact: each window's gradient equals that of one batch
    holding all of its samples, for `CrossEntropyLoss`/`NLLLoss` with reduction "mean"
    or "sum" (class weights, `ignore_index` and label smoothing included) and for any
    loss offering `sum_loss(logits, target)` and `normaliser(target)`; other losses are
    rejected with `UnsupportedLossError`. Under DDP the normaliser is global, so the
    gradient also equals that of one process holding every rank's window. The samples
    per forward pass (`config.micro_batch`: "auto" = the whole window, "loader", or a
    number) therefore do not change the loss; without dropout they do not change the
    gradient either (up to float rounding), with dropout only its dropout masks differ.
    An out-of-memory error halves the forward pass and retries the window.

    `config.precision`: "fp32", "bf16" (autocast, no scaler), "fp16" (autocast and
    `GradScaler`) or "auto" (bf16 where the device supports it, else fp16 on CUDA, else
    fp32). `checkpoints`: a `CheckpointManager` (paths, sidecar, resume fingerprint, how
    often `last` is written) or the best checkpoint's path. `hooks` receive the metrics
    (default: the console lines of docs/design.md). `rank`/`world_size` default to torchrun's
    environment (a single process is rank 0 of 1); with more than one rank the model is
    wrapped in `DistributedDataParallel` and only rank 0 writes files.

    SIGINT/SIGTERM finish the current optimizer step, write `last` and raise
    `RunInterrupted`; `resume` ("auto" or a path) continues from `last` exactly.
    For the history and counters, use `Trainer(...).fit(...)`, which returns a
    `TrainResult`; this function returns its `best_checkpoint`.
    """
    world = resolve_world(rank, world_size)
    trainer = Trainer(model, loss, optimizer, scheduler, config=config, checkpoints=checkpoints,
                      hooks=hooks, device=device, world=world)  # fmt: skip
    return trainer.fit(train_dl, val_dl, num_epochs, resume=resume).best_checkpoint


# -- command line ------------------------------------------------------------------------


def main(argv: list[str] | None = None, prog: str = "saimp train") -> int:
    """`saimp train`: config, logging, process group, data, then `train()`."""
    from src.modelling.training.cli import build_parser, config_from_args
    from src.modelling.training.launch import launched
    from src.modelling.training.run import run_training

    args = build_parser(prog).parse_args(argv)
    cfg = config_from_args(args)
    try:
        with launched(cfg.train.threads) as run:
            result = run_training(
                cfg, run.world, run.device, resume=args.resume, setup=[run.threads],
                governor=run.governor,
            )  # fmt: skip
            log.info(str(result.best_checkpoint))  # the last line: where the best model is
        return 0
    except RunInterrupted as stop:
        return stop.exit_code


if __name__ == "__main__":
    from src.cli import run_module

    run_module(__spec__.name)  # as the module, so its log lines are under `src`
