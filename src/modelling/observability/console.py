"""Console lines in the documented shape (docs/design.md, "Console"): `[EPOCH] Epoch 1/15`,
`Batch    0 | Loss: ...`, `[RAM] ...` (and `[VRAM] ...` on a GPU), written through
`logging`.

This is the plain output (`--progress lines`): a batch line every `log_every`
micro-batches, fit for a file, CI or a worker's pipe. See `progress.BarHooks` for a
terminal.
"""

from __future__ import annotations

import logging
from typing import Any

import torch

from src.core.constants import CLASS_NAMES
from src.modelling.observability.hooks import Hooks
from src.modelling.observability.memory import memory_lines

log = logging.getLogger(__name__)


def format_recall(recall: dict[str, float]) -> str:
    return " | ".join(f"{name} {recall[name]:.2f}" for name in CLASS_NAMES if name in recall)


class ConsoleHooks(Hooks):
    """Turns epoch and batch metrics into the console lines of docs/design.md."""

    def __init__(self, device: torch.device | None = None) -> None:
        self.device = device

    def epoch_start(self, epoch: int, num_epochs: int, n_batches: int | None) -> None:
        total = f" ({n_batches} batches)" if n_batches else ""
        log.info(f"[EPOCH] Epoch {epoch}/{num_epochs}{total}")

    def batch_lines(self, batch_idx: int, loss: float, acc: float) -> list[str]:
        """The seed-shaped lines of one logged batch (the batch line, then memory)."""
        return [
            f"   Batch {batch_idx:4d} | Loss: {loss:.4f} | Acc: {acc * 100:.2f}%",
            *(f"   {line}" for line in memory_lines(self.device)),
        ]

    def batch(self, epoch: int, batch_idx: int, loss: float, acc: float, **extra: Any) -> None:
        for line in self.batch_lines(batch_idx, loss, acc):
            log.info(line)

    def epoch_end(self, record: dict[str, Any]) -> None:
        r = record
        log.info(
            f"[EPOCH] Epoch {r['epoch']} done in {r['seconds']:.1f}s | "
            f"train loss {r['train_loss']:.4f} acc {r['train_acc'] * 100:.2f}% | "
            f"val loss {r['val_loss']:.4f} acc {r['val_acc'] * 100:.2f}% "
            f"macro-F1 {r['val_macro_f1']:.4f} | lr {r['lr']:.2e}"
        )
        log.info(f"   [VAL] recall: {format_recall(r['val_recall'])}")
        if r.get("skipped_steps") or r.get("nonfinite_windows"):
            log.info(
                f"   [AMP] steps skipped by the scaler: {r['skipped_steps']}, "
                f"windows with a non-finite loss: {r['nonfinite_windows']}"
            )
