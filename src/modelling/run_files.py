"""The files a run leaves in `logs/`: the text log, the JSONL metrics, the PNG.

`logs/train_run_{YYYYMMDD_HHMMSS}.txt` receives everything the run prints on stdout
and stderr (a tee, so the console still shows it), `.jsonl` one JSON object per logged
batch and per epoch, and `.png` the curves drawn from the JSONL.
"""

from __future__ import annotations

import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import torch

from src.modelling.plots import plot_history, read_epoch_records
from src.modelling.reporting import ConsoleLogger, memory_lines


def run_stamp() -> str:
    return time.strftime("%Y%m%d_%H%M%S")


@dataclass(frozen=True)
class RunPaths:
    log: Path
    jsonl: Path
    png: Path

    @classmethod
    def in_dir(cls, logs_dir: Path, stamp: str | None = None) -> RunPaths:
        base = Path(logs_dir) / f"train_run_{stamp or run_stamp()}"
        return cls(base.with_suffix(".txt"), base.with_suffix(".jsonl"), base.with_suffix(".png"))


class _Tee:
    """A text stream that writes to the console stream and to the log file."""

    def __init__(self, console: TextIO, log: TextIO) -> None:
        self.console, self.log = console, log

    def write(self, text: str) -> int:
        self.console.write(text)
        self.log.write(text)
        return len(text)

    def flush(self) -> None:
        self.console.flush()
        self.log.flush()

    def isatty(self) -> bool:
        return self.console.isatty()

    def fileno(self) -> int:
        return self.console.fileno()

    @property
    def encoding(self) -> str:
        return getattr(self.console, "encoding", "utf-8")


class TeeOutput:
    """Context manager: while active, stdout and stderr also go to `log_path`."""

    def __init__(self, log_path: Path) -> None:
        self.log_path = log_path

    def __enter__(self) -> TeeOutput:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self.log_path, "a", buffering=1, encoding="utf-8")  # noqa: SIM115
        self._saved = sys.stdout, sys.stderr
        sys.stdout = _Tee(sys.stdout, self._file)
        sys.stderr = _Tee(sys.stderr, self._file)
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc is not None and not isinstance(exc, SystemExit | KeyboardInterrupt):
            # The entry point prints the error on the console after this; keep it in the log.
            self._file.write(f"error: {exc}\n")
        sys.stdout, sys.stderr = self._saved
        self._file.close()


def _finite(value: Any) -> Any:
    """JSON has no NaN: write null instead, so any JSON reader can load the file."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


class RunFilesLogger(ConsoleLogger):
    """The console lines, plus a JSONL record per logged batch and per epoch, plus the PNG."""

    def __init__(self, paths: RunPaths, device: torch.device | None = None) -> None:
        super().__init__(device)
        self.paths = paths
        paths.jsonl.parent.mkdir(parents=True, exist_ok=True)
        self._jsonl = open(paths.jsonl, "a", buffering=1, encoding="utf-8")  # noqa: SIM115

    def _write(self, record: dict[str, Any]) -> None:
        self._jsonl.write(json.dumps(_finite(record)) + "\n")

    def batch(self, epoch: int, batch_idx: int, loss: float, acc: float, **extra: Any) -> None:
        super().batch(epoch, batch_idx, loss, acc, **extra)
        self._write(
            {
                "kind": "step",
                "epoch": epoch,
                "batch": batch_idx,
                "loss": loss,
                "acc": acc,
                **{k: v for k, v in extra.items() if k != "samples"},
                "memory": memory_lines(self.device),
                "time": time.time(),
            }
        )

    def epoch_end(self, record: dict[str, Any]) -> None:
        super().epoch_end(record)
        self._write({"kind": "epoch", **record})
        self._jsonl.flush()
        plot_history(read_epoch_records(self.paths.jsonl), self.paths.png)

    def close(self) -> None:
        self._jsonl.close()
