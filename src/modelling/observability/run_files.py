"""Where a run's files go, and the hooks that record a run (console, files, trackers).

A run of `saimp train` leaves, under `logs/` (`paths.logs_dir`):
- `train_run_{YYYYMMDD_HHMMSS}.txt`: every line the run logged (`src.core.logs.log_file`);
- `train_run_{...}.jsonl` and `.png`: the metrics records and their curves
  (`metrics_file`).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import torch

from src.modelling.observability.console import ConsoleHooks
from src.modelling.observability.hooks import FanoutHooks, Hooks
from src.modelling.observability.metrics_file import JsonlSink, MetricsRecorder
from src.modelling.observability.progress import BarHooks, use_bar
from src.modelling.observability.trackers import RecordSink, flatten_params, make_trackers


def run_stamp() -> str:
    return time.strftime("%Y%m%d_%H%M%S")


@dataclass(frozen=True)
class RunPaths:
    log: Path
    jsonl: Path
    png: Path

    @classmethod
    def in_dir(cls, logs_dir: Path, stamp: str | None = None) -> RunPaths:
        """Paths for a new run; a second run started in the same second gets `_2`, `_3`..."""
        name = f"train_run_{stamp or run_stamp()}"
        base, n = Path(logs_dir) / name, 1
        while base.with_suffix(".txt").exists() or base.with_suffix(".jsonl").exists():
            n += 1
            base = Path(logs_dir) / f"{name}_{n}"
        return cls(base.with_suffix(".txt"), base.with_suffix(".jsonl"), base.with_suffix(".png"))

    @property
    def name(self) -> str:
        """`train_run_{stamp}`: the run's name in trackers."""
        return self.log.stem


class RunFilesHooks(FanoutHooks):
    """The console (lines, or a bar), plus the JSONL/PNG writer, plus optional trackers."""

    def __init__(
        self,
        paths: RunPaths,
        device: torch.device | None = None,
        *,
        console: Hooks | None = None,
        trackers: Iterable[RecordSink] = (),
    ) -> None:
        self.paths = paths
        self.console = console if console is not None else ConsoleHooks(device)
        self.recorder = MetricsRecorder([JsonlSink(paths.jsonl, paths.png), *trackers], device)
        super().__init__([self.console, self.recorder])


def make_run_hooks(
    cfg: Any,
    paths: RunPaths,
    device: torch.device | None = None,
    *,
    is_main: bool = True,
    params: dict[str, Any] | None = None,
    stream: TextIO | None = None,
) -> Hooks:
    """The hooks of `saimp train`, from `cfg.track` (a `Config`).

    On rank 0: console lines or a progress bar (`cfg.track.progress`, decided on
    `stream`, default sys.stdout), the JSONL and PNG in `paths`, and the trackers
    switched on, which receive the resolved config plus `params` (e.g. device,
    precision, parameter count; more can follow with `hooks.log_params`). Other ranks
    get a silent `Hooks`. A switched-on tracker whose extra is missing raises
    `MissingExtraError` before any file is created.
    """
    if not is_main:
        return Hooks()
    trackers = make_trackers(
        cfg.track, paths.name, files_at_close=(paths.jsonl, paths.png, paths.log)
    )
    try:
        console = (
            BarHooks(device, stream=stream) if use_bar(cfg.track.progress, True, stream) else None
        )
        hooks = RunFilesHooks(paths, device, console=console, trackers=trackers)
    except BaseException:
        for t in trackers:
            t.close()
        raise
    # Not the labels: they are the lake's, logged once it is read (`run_training`), and
    # MLflow refuses a parameter logged twice with two values.
    settings = {k: v for k, v in cfg.to_dict().items() if k != "label"}
    hooks.log_params({**flatten_params(settings), **flatten_params(params or {})})
    return hooks
