"""The `last` checkpoint: everything a killed run needs to continue exactly.

It holds the model, optimizer, scheduler and scaler states, the loop's progress
(`LoopState`: epoch, position in the epoch, best metric, early-stopping counter,
history), the streaming dataset's position, every RNG state, and a fingerprint of the
settings that change the result. It is written only at window boundaries (after an
optimizer step), so the position inside an accumulation window is always its start.

Writes are atomic (see `atomic.atomic_write`). Before a new `last` replaces the
old one, the old one becomes `.prev`, so even a `last` damaged after the fact (a disk
error, a truncating copy) falls back to the one before it.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

import torch

from src.modelling.checkpointing.atomic import CheckpointError, atomic_write, safe_load

log = logging.getLogger(__name__)

FORMAT = "saimp-train-state"
VERSION = 1


def last_path_for(best: Path) -> Path:
    """`data/saimp_best.pth` -> `data/saimp_last.pth`; other names get `_last` appended."""
    best = Path(best)
    stem = best.stem.replace("best", "last") if "best" in best.stem else f"{best.stem}_last"
    return best.with_name(stem + best.suffix)


def previous_path(last: Path) -> Path:
    return Path(last).with_name(Path(last).name + ".prev")


def save_training_state(
    path: Path, state: dict[str, Any], during_write: Callable[[], None] | None = None
) -> None:
    """Atomically write `state` as the new `last`, keeping the old one as `.prev`.

    `during_write` runs after the bytes are written and before they are made durable
    (a fault-injection point for tests).
    """
    path = Path(path)
    payload = {"format": FORMAT, "version": VERSION, **state}
    tmp_target = path.with_name(path.name + ".new")

    def write(fh: BinaryIO) -> None:
        torch.save(payload, fh)
        if during_write is not None:
            during_write()

    atomic_write(tmp_target, write)  # complete and fsynced before anything moves
    if path.exists():
        os.replace(path, previous_path(path))
    os.replace(tmp_target, path)


def _load_one(path: Path) -> dict[str, Any]:
    obj = safe_load(path, "training state")
    if not isinstance(obj, dict) or obj.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a SAIMP training-state checkpoint")
    if obj.get("version") != VERSION:
        raise CheckpointError(
            f"{path} has training-state version {obj.get('version')}, this code reads {VERSION}"
        )
    return obj


def load_training_state(path: Path) -> tuple[dict[str, Any], Path]:
    """The newest readable training state: `last`, else `.prev`; and the file it came from."""
    path = Path(path)
    try:
        return _load_one(path), path
    except CheckpointError as err:
        prev = previous_path(path)
        if prev.exists():
            log.warning(f"[RESUME] {err}; falling back to {prev}")
            return _load_one(prev), prev
        raise
