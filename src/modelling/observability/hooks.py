"""The metrics interface between the training loop and everything that records a run.

The loop calls the hooks of one `Hooks` object with numbers only; what they become
(console lines, a progress bar, the JSONL and PNG, TensorBoard, MLflow) is the hooks'
business. Text messages do not travel here: every module logs them through `logging`
(see `src.core.logs`). Ranks that do not record get a plain `Hooks`, whose every call
does nothing, so the loop never checks ranks. A run's hooks are usually a `FanoutHooks`
of several parts: see `run_files.make_run_hooks`.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any


class Hooks:
    """Receives a run's metrics; every hook does nothing (the hooks of a silent rank).

    The loop calls, in order: `epoch_start`, `phase_start("train", n)`, `batch` (every
    `log_every` micro-batches) and `progress` (after each window), then
    `phase_start("val", n)` and `progress` per validation batch, then `checkpoint_saved`
    when the best checkpoint was written, and `epoch_end`. `log_params` and
    `history_restored` come before the first epoch; `close` comes once, at the end, also
    after an error.
    """

    def log_params(self, params: dict[str, Any]) -> None:
        """Facts about the run (resolved config, device, model size) for trackers."""

    def epoch_start(self, epoch: int, num_epochs: int, n_batches: int | None) -> None:
        """An epoch begins; `n_batches` is the loader's length when it has one."""

    def batch(self, epoch: int, batch_idx: int, loss: float, acc: float, **extra: Any) -> None:
        """A logged batch (every `log_every` micro-batches): loss and accuracy of its window.

        `extra` may hold `samples` (the batch's size) and, when the loop knows them,
        `lr`, `step` (a global counter) and `skipped_steps` (run total so far).
        """

    def phase_start(self, phase: str, total_batches: int | None) -> None:
        """Training ("train") or validation ("val") of an epoch begins."""

    def progress(self, phase: str, batches_done: int, samples: int, **metrics: float) -> None:
        """After each window (train) or batch (val): batches done so far in the phase, the
        samples just processed, and the latest metrics (loss, acc, lr)."""

    def checkpoint_saved(self, path: Path, record: dict[str, Any] | None = None) -> None:
        """The best checkpoint (and its `.json` sidecar) was just written to `path`;
        `record` is the epoch's record (the same one `epoch_end` receives next)."""

    def epoch_end(self, record: dict[str, Any]) -> None:
        """An epoch ended; `record` holds its train and validation metrics."""

    def history_restored(self, records: list[dict[str, Any]]) -> None:
        """A resumed run starts: `records` are the epoch records of the run so far (what
        `epoch_end` received before the interruption), so files and plots stay whole."""

    def close(self) -> None:
        """The run ended (normally or not): release files and trackers."""


class FanoutHooks(Hooks):
    """Passes every hook to each of its parts, in order (console first, then files, trackers).

    `close` closes every part even when one of them fails, then raises the first error.
    """

    def __init__(self, parts: Iterable[Hooks]) -> None:
        self.parts = list(parts)

    def log_params(self, params: dict[str, Any]) -> None:
        for p in self.parts:
            p.log_params(params)

    def history_restored(self, records: list[dict[str, Any]]) -> None:
        for p in self.parts:
            p.history_restored(records)

    def epoch_start(self, epoch: int, num_epochs: int, n_batches: int | None) -> None:
        for p in self.parts:
            p.epoch_start(epoch, num_epochs, n_batches)

    def batch(self, epoch: int, batch_idx: int, loss: float, acc: float, **extra: Any) -> None:
        for p in self.parts:
            p.batch(epoch, batch_idx, loss, acc, **extra)

    def phase_start(self, phase: str, total_batches: int | None) -> None:
        for p in self.parts:
            p.phase_start(phase, total_batches)

    def progress(self, phase: str, batches_done: int, samples: int, **metrics: float) -> None:
        for p in self.parts:
            p.progress(phase, batches_done, samples, **metrics)

    def checkpoint_saved(self, path: Path, record: dict[str, Any] | None = None) -> None:
        for p in self.parts:
            p.checkpoint_saved(path, record)

    def epoch_end(self, record: dict[str, Any]) -> None:
        for p in self.parts:
            p.epoch_end(record)

    def close(self) -> None:
        first: BaseException | None = None
        for p in self.parts:
            try:
                p.close()
            except Exception as err:  # close the others, then report the first failure
                first = first or err
        if first is not None:
            raise first
