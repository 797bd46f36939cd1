"""What a run tells its user: console lines in the seeds' shape, memory lines.

Only rank 0 gets a `ConsoleLogger`; other ranks get a `NullLogger`, so the loop never
checks ranks before printing.
"""

from __future__ import annotations

from typing import Any

import psutil
import torch

from src.core.constants import CLASS_NAMES

GB = 1024**3


def memory_lines(device: torch.device | None = None) -> list[str]:
    """`[RAM] used / total` for the machine, and `[VRAM] reserved / total` on a GPU."""
    vm = psutil.virtual_memory()
    lines = [f"[RAM] {(vm.total - vm.available) / GB:.1f} GB / {vm.total / GB:.1f} GB"]
    if device is not None and device.type == "cuda":
        total = torch.cuda.get_device_properties(device).total_memory
        reserved = torch.cuda.memory_reserved(device)
        lines.append(f"[VRAM] {reserved / GB:.1f} GB / {total / GB:.1f} GB")
    return lines


def format_recall(recall: dict[str, float]) -> str:
    return " | ".join(f"{name} {recall[name]:.2f}" for name in CLASS_NAMES if name in recall)


class NullLogger:
    """The logger of ranks that do not log: every call does nothing."""

    def info(self, message: str) -> None:
        """A line for the console and the log."""

    def epoch_start(self, epoch: int, num_epochs: int, n_batches: int | None) -> None:
        """An epoch begins; `n_batches` is the loader's length when it has one."""

    def batch(self, epoch: int, batch_idx: int, loss: float, acc: float, **extra: Any) -> None:
        """A logged batch (every `log_every` micro-batches): loss and accuracy of that batch."""

    def phase_start(self, phase: str, total_batches: int | None) -> None:
        """Training ("train") or validation ("val") of an epoch begins."""

    def progress(self, phase: str, batches_done: int, samples: int, **metrics: float) -> None:
        """After each window (train) or batch (val): batches done so far in the phase, the
        samples just processed, and the latest metrics (loss, acc, lr)."""

    def epoch_end(self, record: dict[str, Any]) -> None:
        """An epoch ended; `record` holds its train and validation metrics."""

    def close(self) -> None:
        """The run ended (normally or not): release files and trackers."""


class ConsoleLogger(NullLogger):
    """Prints the seeds' lines: `[EPOCH] Epoch 1/15`, `Batch    0 | Loss: ...`, `[RAM] ...`."""

    def __init__(self, device: torch.device | None = None) -> None:
        self.device = device

    def info(self, message: str) -> None:
        print(message, flush=True)

    def epoch_start(self, epoch: int, num_epochs: int, n_batches: int | None) -> None:
        total = f" ({n_batches} batches)" if n_batches else ""
        self.info(f"[EPOCH] Epoch {epoch}/{num_epochs}{total}")

    def batch(self, epoch: int, batch_idx: int, loss: float, acc: float, **extra: Any) -> None:
        self.info(f"   Batch {batch_idx:4d} | Loss: {loss:.4f} | Acc: {acc * 100:.2f}%")
        for line in memory_lines(self.device):
            self.info(f"   {line}")

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
