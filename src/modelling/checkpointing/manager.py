"""The checkpoint policy of a run in one object: where the best and `last` files go, when
`last` is written, what the best file's sidecar says, whether a resume may continue, and
whether this run may replace a best checkpoint that an earlier run left at a shared path.

Modelled on torchtitan's `CheckpointManager` and timm's `CheckpointSaver`: the trainer
hands it what to save and asks it whether to save; the manager owns paths, atomic
writes and the resume check. Only the writer rank (rank 0) writes; every rank reads.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from torch import nn

from src.core.constants import DEFAULT_CHECKPOINT
from src.modelling.checkpointing.atomic import CheckpointError, safe_load
from src.modelling.checkpointing.best import load_sidecar, save_best, sidecar_path
from src.modelling.checkpointing.fingerprint import fingerprint_difference
from src.modelling.checkpointing.last import (
    last_path_for,
    load_training_state,
    previous_path,
    save_training_state,
)
from src.modelling.checkpointing.sidecar import comparable_part, differences
from src.modelling.evaluation.metrics import is_better
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

    `best` is a shared place, guarded for earlier runs: a best checkpoint already there
    is replaced only by a model of the same data, labels and model shape
    (`sidecar.comparable_part`) whose selection metric is better, unless `replace_best`.
    `run_best`: this run's own best file, where every improvement is also written (for
    callers that give none, `{best stem}_{start time}.pth` beside `best`, used only when
    the earlier model is kept). `result_path` says where this run's best model is.
    """

    def __init__(
        self,
        best: Path | str = DEFAULT_CHECKPOINT,
        *,
        last: Path | str | None = None,
        sidecar: dict[str, Any] | None = None,
        fingerprint: dict[str, Any] | None = None,
        every_windows: int | None = None,
        run_best: Path | str | None = None,
        replace_best: bool = False,
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
        self.run_best = Path(run_best) if run_best is not None else None
        self.replace_best = replace_best
        self._started = time.strftime("%Y%m%d_%H%M%S")
        self._own_default = self.best_path.with_name(f"{self.best_path.stem}_{self._started}.pth")
        self._incumbent = None if replace_best else _read_sidecar(self.best_path)
        self._owns_shared = self._incumbent is None
        self._kept_because = ""

    @property
    def result_path(self) -> Path:
        """Where this run's best model is: the shared `best` path, unless a better or
        incomparable earlier model was kept there (then `run_best`)."""
        if self._owns_shared or self.run_best is None:
            return self.best_path
        return self.run_best

    @property
    def kept_message(self) -> str | None:
        """One line saying why the shared best was kept and where this run's best went."""
        if self._owns_shared or self.run_best is None:
            return None
        return (
            f"kept {self.best_path}: {self._kept_because}; this run's best model is "
            f"{self.run_best} (pass --replace-best to replace it anyway)"
        )

    # -- writing ---------------------------------------------------------------------------
    def save_best(self, model: nn.Module, epoch: int, select_metric: str, metrics: dict) -> Path:
        """Write this run's new best weights and sidecar (`sidecar` + epoch, metric,
        metrics): to `run_best` when set, and to `best` when this run may replace what is
        there. Returns `result_path`."""
        sidecar = {**self.sidecar, "epoch": epoch, "select_metric": select_metric}
        sidecar["metrics"] = metrics
        if not self._owns_shared:
            self._owns_shared = self._may_replace(sidecar, select_metric)
        if not self._owns_shared and self.run_best is None:
            self.run_best = self._own_default  # this run needs a place of its own
        if self.is_writer:
            if self.run_best is not None:
                save_best(model, self.run_best, sidecar)
            if self._owns_shared:
                save_best(model, self.best_path, sidecar)
        return self.result_path

    def _may_replace(self, new: dict[str, Any], metric: str) -> bool:
        """Whether the new best beats the earlier run's model at the shared path."""
        old = self._incumbent or {}
        changed = differences(comparable_part(old), comparable_part(new))
        if changed:
            self._kept_because = (
                "it was trained on other data, labels or model shape ("
                + "; ".join(changed[:3])
                + ("; ..." if len(changed) > 3 else "")
                + ")"
            )
            return False
        theirs = (old.get("metrics") or {}).get(metric)
        ours = new["metrics"][metric]
        if theirs is None or is_better(metric, ours, float(theirs)):
            return True
        self._kept_because = (
            f"its {metric} {float(theirs):.4f} (epoch {old.get('epoch')} of an earlier run) "
            f"is better than this run's {ours:.4f}"
        )
        return False

    def last_due(self, windows_done: int) -> bool:
        """Whether the periodic `last` checkpoint is due after `windows_done` windows."""
        return bool(self.every_windows) and windows_done % self.every_windows == 0

    def save_last(
        self, state: dict[str, Any], during_write: Callable[[], None] | None = None
    ) -> None:
        """Write `state` as the new `last`, the old one as `.prev`; with the fingerprint
        (for resume) and the sidecar (so `saimp evaluate` can read the weights inside)."""
        if not self.is_writer:
            return
        payload = {**state, "fingerprint": self.fingerprint, "sidecar": self.sidecar}
        if self.run_best is not None:
            payload["run_name"] = self.run_best.parent.name
        save_training_state(self.last_path, payload, during_write)

    def keep_earlier_last(self) -> Path | None:
        """A new run (not a resume) will write `last`: move an earlier run's resumable state
        into that run's own folder first, so it can still be continued. Returns where it
        went (None: nothing to keep, or no run folders)."""
        if not self.is_writer or self.run_best is None or not self.last_path.exists():
            return None
        try:
            name = safe_load(self.last_path, "training state").get("run_name")
        except (CheckpointError, AttributeError):
            name = None  # unreadable or from before run names: kept all the same
        folder = self.run_best.parent.parent / (name or f"earlier_{self._started}")
        folder.mkdir(parents=True, exist_ok=True)
        kept = folder / "last.pth"
        os.replace(self.last_path, kept)
        prev = previous_path(self.last_path)
        if prev.exists():
            os.replace(prev, previous_path(kept))
        log.info(
            f"[CKPT] kept the earlier run's resumable state as {kept} "
            f"(continue that run with --resume {kept})"
        )
        return kept

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


def _read_sidecar(best: Path) -> dict[str, Any] | None:
    """The sidecar of the best checkpoint at `best`, None when there is none; an
    unreadable one counts as a model of unknown data, so it is kept."""
    if not best.exists():
        return None
    try:
        value = load_sidecar(best)
    except CheckpointError:
        value = None
    return value if isinstance(value, dict) else {"unreadable sidecar": str(sidecar_path(best))}
