"""What a run tells its user: the logger interface, console lines in the seeds' shape,
memory figures.

The loop talks to one logger through the hooks of `NullLogger`. Only rank 0 gets a
logger that does something; other ranks get a `NullLogger`, so the loop never checks
ranks before printing. A run's logger is usually a `FanoutLogger` of several parts
(console lines or a progress bar, the JSONL/PNG writer, trackers): see
`src.modelling.run_files.make_run_logger`.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import psutil
import torch

from src.core.constants import CLASS_NAMES

GB = 1024**3


def memory_usage(device: torch.device | None = None) -> dict[str, float | None]:
    """Machine RAM in use and in total, and on a GPU the VRAM reserved by torch and in total (GB).

    The VRAM values are None off CUDA.
    """
    vm = psutil.virtual_memory()
    usage: dict[str, float | None] = {
        "ram_gb": (vm.total - vm.available) / GB,
        "ram_total_gb": vm.total / GB,
        "vram_gb": None,
        "vram_total_gb": None,
    }
    if device is not None and device.type == "cuda":
        usage["vram_gb"] = torch.cuda.memory_reserved(device) / GB
        usage["vram_total_gb"] = torch.cuda.get_device_properties(device).total_memory / GB
    return usage


def memory_lines(device: torch.device | None = None) -> list[str]:
    """`[RAM] used / total` for the machine, and `[VRAM] reserved / total` on a GPU."""
    m = memory_usage(device)
    lines = [f"[RAM] {m['ram_gb']:.1f} GB / {m['ram_total_gb']:.1f} GB"]
    if m["vram_gb"] is not None:
        lines.append(f"[VRAM] {m['vram_gb']:.1f} GB / {m['vram_total_gb']:.1f} GB")
    return lines


def format_recall(recall: dict[str, float]) -> str:
    return " | ".join(f"{name} {recall[name]:.2f}" for name in CLASS_NAMES if name in recall)


class Throughput:
    """Samples per second since `start()`, from the samples reported with `add()`."""

    def __init__(self) -> None:
        self.start()

    def start(self) -> None:
        self.started = time.perf_counter()
        self.samples = 0

    def add(self, samples: int) -> None:
        self.samples += samples

    @property
    def per_second(self) -> float | None:
        elapsed = time.perf_counter() - self.started
        return self.samples / elapsed if elapsed > 0 and self.samples else None


class NullLogger:
    """The logger of ranks that do not log: every call does nothing.

    It is also the interface every logger implements; a logger overrides the hooks it
    needs. The loop calls, in order: `epoch_start`, `phase_start("train", n)`, `batch`
    (every `log_every` micro-batches) and `progress` (after each window), then
    `phase_start("val", n)` and `progress` per validation batch, then `checkpoint_saved`
    when the best checkpoint was written, and `epoch_end`. `info` may come at any time;
    `close` comes once, at the end, also after an error.
    """

    def info(self, message: str) -> None:
        """A line for the console and the log."""

    def log_params(self, params: dict[str, Any]) -> None:
        """Facts about the run (resolved config, device, model size) for trackers."""

    def epoch_start(self, epoch: int, num_epochs: int, n_batches: int | None) -> None:
        """An epoch begins; `n_batches` is the loader's length when it has one."""

    def batch(self, epoch: int, batch_idx: int, loss: float, acc: float, **extra: Any) -> None:
        """A logged batch (every `log_every` micro-batches): loss and accuracy of that batch.

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


class ConsoleLogger(NullLogger):
    """Prints the seeds' lines: `[EPOCH] Epoch 1/15`, `Batch    0 | Loss: ...`, `[RAM] ...`.

    This is the plain output ("lines"): a batch line every `log_every` micro-batches,
    fit for a file, CI or a worker's pipe. See `progress.BarLogger` for a terminal.
    """

    def __init__(self, device: torch.device | None = None) -> None:
        self.device = device

    def info(self, message: str) -> None:
        print(message, flush=True)

    def epoch_start(self, epoch: int, num_epochs: int, n_batches: int | None) -> None:
        total = f" ({n_batches} batches)" if n_batches else ""
        self.info(f"[EPOCH] Epoch {epoch}/{num_epochs}{total}")

    def batch_lines(self, batch_idx: int, loss: float, acc: float) -> list[str]:
        """The seed-shaped lines of one logged batch (the batch line, then memory)."""
        return [
            f"   Batch {batch_idx:4d} | Loss: {loss:.4f} | Acc: {acc * 100:.2f}%",
            *(f"   {line}" for line in memory_lines(self.device)),
        ]

    def batch(self, epoch: int, batch_idx: int, loss: float, acc: float, **extra: Any) -> None:
        for line in self.batch_lines(batch_idx, loss, acc):
            self.info(line)

    def epoch_end(self, record: dict[str, Any]) -> None:
        r = record
        self.info(
            f"[EPOCH] Epoch {r['epoch']} done in {r['seconds']:.1f}s | "
            f"train loss {r['train_loss']:.4f} acc {r['train_acc'] * 100:.2f}% | "
            f"val loss {r['val_loss']:.4f} acc {r['val_acc'] * 100:.2f}% "
            f"macro-F1 {r['val_macro_f1']:.4f} | lr {r['lr']:.2e}"
        )
        self.info(f"   [VAL] recall: {format_recall(r['val_recall'])}")
        if r.get("skipped_steps") or r.get("nonfinite_windows"):
            self.info(
                f"   [AMP] steps skipped by the scaler: {r['skipped_steps']}, "
                f"windows with a non-finite loss: {r['nonfinite_windows']}"
            )


class FanoutLogger(NullLogger):
    """Passes every hook to each of its parts, in order (console first, then files, trackers).

    `info` goes to the parts too; only console parts print it. `close` closes every part
    even when one of them fails, then raises the first error.
    """

    def __init__(self, parts: Iterable[NullLogger]) -> None:
        self.parts = list(parts)

    def info(self, message: str) -> None:
        for p in self.parts:
            p.info(message)

    def history_restored(self, records: list[dict[str, Any]]) -> None:
        for p in self.parts:
            p.history_restored(records)

    def log_params(self, params: dict[str, Any]) -> None:
        for p in self.parts:
            p.log_params(params)

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
