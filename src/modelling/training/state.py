"""The plain values of a training run: its progress, one window's sums, its result."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from src.core.errors import UserError


class TrainingError(UserError):
    """The run cannot go on (persistent non-finite loss, empty loaders); nothing good is lost."""


@dataclass
class LoopState:
    """The loop's progress: what a resumed run needs beside the tensors. Plain values only."""

    epoch: int = 0
    """Epochs completed."""
    batches_done: int = 0
    """Loader batches consumed in the epoch in progress (0 between epochs)."""
    epoch_sums: list[float] = field(default_factory=lambda: [0.0, 0.0, 0.0, 0.0])
    """Loss sum, normaliser, correct, samples of the epoch in progress, over the windows
    whose loss was finite (a window with a non-finite loss is skipped and counted apart)."""
    epoch_start_counts: list[int] = field(default_factory=lambda: [0, 0])
    """`skipped_steps` and `nonfinite_windows` when the epoch in progress began."""
    epoch_seconds: float = 0.0
    """Training time already spent in the epoch in progress (before an interruption)."""
    windows_done: int = 0
    """Accumulation windows processed over the whole run."""
    optimizer_steps: int = 0
    micro_batch: int | None = None
    """Samples per forward pass when re-cut from the loader's batches (auto, or OOM back-off)."""
    best_metric: float | None = None
    best_epoch: int | None = None
    bad_epochs: int = 0
    """Epochs since the selection metric last improved (early stopping counter)."""
    skipped_steps: int = 0
    """Optimizer steps the fp16 scaler skipped for inf/nan gradients (whole run)."""
    nonfinite_windows: int = 0
    consecutive_nonfinite: int = 0
    stopped_early: bool = False
    history: list[dict[str, Any]] = field(default_factory=list)

    def start_epoch(self) -> None:
        self.batches_done = 0
        self.epoch_sums = [0.0, 0.0, 0.0, 0.0]
        self.epoch_start_counts = [self.skipped_steps, self.nonfinite_windows]
        self.epoch_seconds = 0.0


@dataclass
class WindowResult:
    """One accumulation window, reduced over ranks."""

    loss_sum: float
    normaliser: float
    correct: int
    samples: int
    stop_requested: bool = False


@dataclass
class TrainResult:
    """What `Trainer.fit` returns: where the checkpoints are and how the run went."""

    best_checkpoint: Path
    """The best model's `state_dict` (its JSON sidecar beside it, suffix `.json`)."""
    last_checkpoint: Path
    """The full training state, for `resume`."""
    state: LoopState
    """The loop's final progress: `history` (one record per epoch, as the hooks received
    them), `best_epoch`, `best_metric`, `stopped_early`, step counters, `micro_batch`."""

    @property
    def history(self) -> list[dict[str, Any]]:
        return self.state.history
