"""The checkpoint policy of a run in one object: where the best and `last` files go, when
`last` is written, what the best file's sidecar says, and whether a resume may continue.

Modelled on torchtitan's `CheckpointManager` and timm's `CheckpointSaver`: the trainer
hands it what to save and asks it whether to save; the manager owns paths, atomic
writes and the resume check. Only the writer rank (rank 0) writes; every rank reads.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from torch import nn

from src.core.constants import DEFAULT_CHECKPOINT
from src.modelling.checkpointing.best import save_best
from src.modelling.checkpointing.fingerprint import fingerprint_difference
from src.modelling.checkpointing.last import (
    last_path_for,
    load_training_state,
    previous_path,
    save_training_state,
)
from src.modelling.training.state import TrainingError

log = logging.getLogger(__name__)


class CheckpointManager:
    """The best checkpoint, the resumable `last` checkpoint, and their policy.

    `best`: the best model's `state_dict` path (its JSON sidecar goes beside it, suffix
    `.json`), written when the selection metric improves. `last`: the full training
    state (default: `saimp_last.pth` beside `saimp_best.pth`), written after every epoch,
    every `every_windows` windows (None: only per epoch) and on SIGINT/SIGTERM; the one
    before it is kept as `.prev`. `sidecar`: what inference needs (model config,
    features, normalisation...), stored with the best weights plus epoch and metrics.
    `fingerprint`: flat settings that change the result; a resume must match them.
    """

    def __init__(
        self,
        best: Path | str = DEFAULT_CHECKPOINT,
        *,
        last: Path | str | None = None,
        sidecar: dict[str, Any] | None = None,
        fingerprint: dict[str, Any] | None = None,
        every_windows: int | None = None,
    ) -> None:
        if every_windows is not None and every_windows < 1:
            raise ValueError(f"every_windows must be >= 1 or None, got {every_windows}")
        self.best_path = Path(best)
        self.last_path = Path(last) if last is not None else last_path_for(self.best_path)
        self.sidecar = dict(sidecar or {})
        self.fingerprint = dict(fingerprint or {})
        self.every_windows = every_windows
        self.is_writer = True
        """False on ranks other than 0 (set by the trainer): they hold the same state."""

    @classmethod
    def of(cls, value: CheckpointManager | Path | str | None) -> CheckpointManager:
        """A manager from a manager, a best-checkpoint path, or None (the default path)."""
        if isinstance(value, CheckpointManager):
            return value
        return cls(DEFAULT_CHECKPOINT if value is None else value)

    # -- writing ---------------------------------------------------------------------------
    def save_best(self, model: nn.Module, epoch: int, select_metric: str, metrics: dict) -> None:
        """Write the best weights and the sidecar (`sidecar` + epoch, metric, metrics)."""
        if not self.is_writer:
            return
        save_best(
            model,
            self.best_path,
            {**self.sidecar, "epoch": epoch, "select_metric": select_metric, "metrics": metrics},
        )

    def last_due(self, windows_done: int) -> bool:
        """Whether the periodic `last` checkpoint is due after `windows_done` windows."""
        return bool(self.every_windows) and windows_done % self.every_windows == 0

    def save_last(
        self, state: dict[str, Any], during_write: Callable[[], None] | None = None
    ) -> None:
        """Write `state` (plus the fingerprint) as the new `last`, the old one as `.prev`."""
        if not self.is_writer:
            return
        save_training_state(
            self.last_path, {**state, "fingerprint": self.fingerprint}, during_write
        )

    # -- resuming --------------------------------------------------------------------------
    def load_last(self, resume: Path | str) -> tuple[dict[str, Any], Path] | None:
        """The training state to continue from, and the file it came from.

        `resume`: "auto" (the `last` file if there is one, else None: a new run) or a
        path. Raises `TrainingError` when the saved fingerprint differs from this run's,
        and `CheckpointError` when no readable state exists.
        """
        auto = str(resume) == "auto"
        path = self.last_path if auto else Path(resume)
        if auto and not (path.exists() or previous_path(path).exists()):
            log.info(f"[RESUME] no {path} yet: starting a new run")
            return None
        payload, source = load_training_state(path)
        differences = fingerprint_difference(payload.get("fingerprint", {}), self.fingerprint)
        if differences:
            raise TrainingError(
                f"cannot resume from {source}: settings that change the result differ ("
                + "; ".join(differences)
                + "); start a new run or restore those settings"
            )
        return payload, source
