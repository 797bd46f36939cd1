"""A live progress bar for a terminal: batches done / total, ETA, samples/s, loss, accuracy,
RAM (and VRAM on a GPU), for training and for validation.

`--progress` chooses the console output (`TrackConfig.progress`):
- "auto": the bar when stdout's console is a terminal and this is rank 0, else lines;
- "lines": the seed-shaped lines every `log_every` batches (`ConsoleHooks`);
- "bar": the bar, even when stdout is not a terminal.

The bar is drawn on stdout only; the run's log file never receives a redraw. The log
file receives instead the same batch lines as the plain output (logged with
`FILE_ONLY`), so it reads the same with or without a bar. Log lines on the console are
written through `tqdm.write` (`src.core.logs.ConsoleHandler`), which clears the bar and
redraws it, so they never garble it.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from typing import Any, TextIO

import torch
from tqdm import tqdm

from src.core.logs import FILE_ONLY
from src.modelling.observability.console import ConsoleHooks
from src.modelling.observability.memory import Throughput, memory_usage

log = logging.getLogger(__name__)

BAR_FORMAT = (
    "{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} "
    "[{elapsed} elapsed, ETA {remaining}, {rate_fmt}{postfix}]"
)
"""The bar with a known total (the loader's length, from the lake's metadata)."""
OPEN_FORMAT = "{desc}: {n_fmt} batches [{elapsed} elapsed, {rate_fmt}{postfix}]"
"""The bar of a loader without a length: no percentage, no ETA."""


def is_terminal(stream: TextIO | None = None) -> bool:
    """Whether `stream`'s console is an interactive terminal able to redraw a bar."""
    console = sys.stdout if stream is None else stream
    try:
        tty = console.isatty()
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False
    return bool(tty) and os.environ.get("TERM") != "dumb"


def use_bar(mode: str, is_main: bool = True, stream: TextIO | None = None) -> bool:
    """Whether `--progress mode` shows the bar (rank 0 only) rather than plain lines."""
    if mode not in ("auto", "bar", "lines"):
        raise ValueError(f"track.progress must be auto, bar or lines, got {mode!r}")
    if not is_main or mode == "lines":
        return False
    return mode == "bar" or is_terminal(stream)


class BarHooks(ConsoleHooks):
    """`ConsoleHooks`' epoch lines, with a tqdm bar for each training and validation phase.

    `stream` is where the bar is drawn (default: sys.stdout when a bar starts);
    `refresh_s` is the shortest interval between two redraws.
    """

    def __init__(
        self,
        device: torch.device | None = None,
        stream: TextIO | None = None,
        refresh_s: float = 0.5,
    ) -> None:
        super().__init__(device)
        self.stream = stream
        self.refresh_s = refresh_s
        self.bar: tqdm | None = None
        self._label = ""
        self._throughput = Throughput()
        self._next_postfix = 0.0

    # -- lines --------------------------------------------------------------------------
    def batch(self, epoch: int, batch_idx: int, loss: float, acc: float, **extra: Any) -> None:
        # The bar shows these numbers live; the log file keeps the plain lines.
        for line in self.batch_lines(batch_idx, loss, acc):
            log.info(line, extra=FILE_ONLY)

    def epoch_start(self, epoch: int, num_epochs: int, n_batches: int | None) -> None:
        self._close_bar()
        self._label = f"Epoch {epoch}/{num_epochs}"
        super().epoch_start(epoch, num_epochs, n_batches)

    def epoch_end(self, record: dict[str, Any]) -> None:
        self._close_bar()
        super().epoch_end(record)

    def close(self) -> None:
        self._close_bar()

    # -- the bar ------------------------------------------------------------------------
    def phase_start(self, phase: str, total_batches: int | None) -> None:
        self._close_bar()
        total = total_batches if total_batches else None
        self._throughput.start()
        self._next_postfix = 0.0
        self.bar = tqdm(
            total=total,
            desc=f"{self._label} {phase}".strip(),
            unit=" batch",
            file=self.stream if self.stream is not None else sys.stdout,
            bar_format=BAR_FORMAT if total else OPEN_FORMAT,
            mininterval=self.refresh_s,
            dynamic_ncols=True,
            leave=True,
            disable=False,
        )

    def progress(self, phase: str, batches_done: int, samples: int, **metrics: float) -> None:
        bar = self.bar
        if bar is None:
            return
        self._throughput.add(samples)
        now = time.monotonic()
        if now >= self._next_postfix or (bar.total and batches_done >= bar.total):
            self._next_postfix = now + self.refresh_s
            bar.set_postfix_str(self._postfix(metrics), refresh=False)
        bar.update(batches_done - bar.n)

    def _postfix(self, metrics: dict[str, float]) -> str:
        parts = []
        if metrics.get("loss") is not None:
            parts.append(f"loss {metrics['loss']:.4f}")
        if metrics.get("acc") is not None:
            parts.append(f"acc {metrics['acc'] * 100:.1f}%")
        rate = self._throughput.per_second
        if rate is not None:
            parts.append(f"{rate:,.0f} samples/s")
        m = memory_usage(self.device)
        parts.append(f"RAM {m['ram_gb']:.1f}/{m['ram_total_gb']:.1f} GB")
        if m["vram_gb"] is not None:
            parts.append(f"VRAM {m['vram_gb']:.1f}/{m['vram_total_gb']:.1f} GB")
        return " | ".join(parts)

    def _close_bar(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
