"""One walk-forward fold on disk: its training run, its judgement, its result files.

Each fold lives in `{out}/fold_{k}/`: the training run's best checkpoint
`saimp_best.pth` (+ `.json`) and resumable state `saimp_last.pth`, its `logs/` and
`runs/`, then `result.npz` (what pooling needs) and `result.json` (the fold's report),
each written atomically, the JSON last: a fold whose `result.json` exists is done and
is never recomputed. A fold without it trains with `--resume auto`, so a fold killed
mid-training continues exactly from its `last` checkpoint (and a fold killed after
training resumes at the end of its last epoch, trains nothing, and is judged).
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from src.core.errors import UserError
from src.data.split import iso
from src.modelling.checkpointing.atomic import atomic_save_json, atomic_write
from src.modelling.training.faults import KILL_AT_WINDOW_ENV, KILL_IN_SAVE_ENV, OOM_ENV
from src.modelling.walkforward.folds import Fold

log = logging.getLogger(__name__)

#: Injected faults (`training/faults.py`) apply only while this fold trains, when set.
FAULT_FOLD_ENV = "SAIMP_FAULT_FOLD"
FAULT_ENVS = (KILL_AT_WINDOW_ENV, KILL_IN_SAVE_ENV, OOM_ENV)
CHECKPOINT_NAME = "saimp_best.pth"
RESULT_JSON = "result.json"
RESULT_NPZ = "result.npz"
#: Train flags the walk-forward sets for each fold itself.
OWNED_FLAGS = (
    "--checkpoint",
    "--logs-dir",
    "--runs-dir",
    "--resume",
    "--val-start",
    "--test-start",
    "--train-start",
    "--replace-best",
    "--no-replace-best",
)


@dataclass(frozen=True)
class FoldPaths:
    out: Path
    k: int

    @property
    def dir(self) -> Path:
        return self.out / f"fold_{self.k}"

    @property
    def checkpoint(self) -> Path:
        return self.dir / CHECKPOINT_NAME

    @property
    def result_json(self) -> Path:
        return self.dir / RESULT_JSON

    @property
    def result_npz(self) -> Path:
        return self.dir / RESULT_NPZ

    def done(self) -> bool:
        return self.result_json.is_file() and self.result_npz.is_file()


def refuse_owned_flags(train_args: list[str]) -> None:
    """`UserError` for a train flag the walk-forward sets per fold (`OWNED_FLAGS`)."""
    for arg in train_args:
        flag = arg.split("=", 1)[0]
        if flag in OWNED_FLAGS:
            raise UserError(
                f"{flag}: saimp walk-forward sets it for each fold (checkpoints under --out, "
                "split dates from the folds, --resume auto); leave it out"
            )


def fold_argv(train_args: list[str], fold: Fold, data_dir: Path, paths: FoldPaths) -> list[str]:
    """`saimp train`'s arguments for this fold: the user's train flags, then the fold's
    lake, output locations, split dates and embargo (named flags win over --set/TOML)."""
    argv = [
        *train_args,
        "--data-dir", str(data_dir),
        "--checkpoint", str(paths.checkpoint),
        "--logs-dir", str(paths.dir / "logs"),
        "--runs-dir", str(paths.dir / "runs"),
        "--val-start", iso(fold.val_start_ms),
        "--test-start", iso(fold.test_start_ms),
        "--embargo-minutes", str(fold.embargo_ms // 60_000),
        "--replace-best",  # the fold's folder is its own: its best is this run's best
    ]  # fmt: skip
    if fold.rolling:
        argv += ["--train-start", iso(fold.train_from_ms)]
    return argv


@contextlib.contextmanager
def fold_faults(k: int) -> Iterator[None]:
    """With `SAIMP_FAULT_FOLD=N` set, the injected-fault variables are in the
    environment only while fold N trains (a test kills one fold's training); without
    it they stay as they are."""
    chosen = os.environ.get(FAULT_FOLD_ENV)
    if not chosen or int(chosen) == k:
        yield
        return
    saved = {name: os.environ.pop(name) for name in FAULT_ENVS if name in os.environ}
    try:
        yield
    finally:
        os.environ.update(saved)


def train_fold(
    train_args: list[str],
    fold: Fold,
    data_dir: Path,
    paths: FoldPaths,
    *,
    world: Any,
    device: Any,
    setup: list[str],
    governor: Any,
    prog: str,
) -> None:
    """Train (or continue training) the fold's model; the run calibrates its best
    checkpoint (rank 0). Raises `RunInterrupted` on SIGINT/SIGTERM."""
    from src.modelling.training.cli import build_parser, config_from_args
    from src.modelling.training.run import run_training

    args = build_parser(prog).parse_args(fold_argv(train_args, fold, data_dir, paths))
    cfg = config_from_args(args)
    with fold_faults(fold.k):
        run_training(
            cfg, world, device, resume="auto", setup=setup, governor=governor,
            continue_hint="run the same saimp walk-forward command again to continue",
        )  # fmt: skip


def judge_fold(
    fold: Fold,
    data_dir: Path,
    paths: FoldPaths,
    *,
    costs: Any,
    short_stops: bool,
    draws: int,
    seed: int,
    device: Any,
    train_seconds: float,
) -> dict[str, Any]:
    """Judge the fold's checkpoint on its test block; write `result.npz`, then
    `result.json` (atomically); return the fold's summary."""
    from src.modelling.checkpointing.best import load_sidecar
    from src.modelling.walkforward.test_period import judge_period

    started = time.perf_counter()
    if not paths.checkpoint.is_file():
        raise UserError(
            f"--out {paths.out}: fold {fold.k} has no checkpoint {paths.checkpoint} after "
            "training; remove that fold's folder and run again"
        )
    period = judge_period(
        paths.checkpoint, data_dir, fold.test_start_ms, fold.test_end_ms, costs=costs,
        short_stops=short_stops, draws=draws, seed=seed, device=device,
    )  # fmt: skip
    sidecar = load_sidecar(paths.checkpoint)
    counts = sidecar.get("label_counts") or {}
    decision = sidecar.get("decision") or {}
    summary = {
        "fold": fold.k,
        "bounds": fold.to_dict(),
        "checkpoint": str(paths.checkpoint.relative_to(paths.out)),
        "epoch": sidecar.get("epoch"),
        "calibration": (sidecar.get("calibration") or {}).get("method"),
        "decision_rule": decision.get("rule"),
        "windows": {
            "train": int(sum(counts.get("train", []))),
            "val": int(sum(counts.get("val", []))),
            "test": period.summary["windows"],
        },
        **{k: v for k, v in period.summary.items() if k != "windows"},
        "seconds": {"train": train_seconds, "judge": time.perf_counter() - started},
    }
    if summary["calibration"] is None:
        log.warning(
            f"fold {fold.k}: {paths.checkpoint} has no calibration (see its training log); "
            "judged with its softmax and argmax"
        )
    write_result(paths, summary, period.arrays)
    return summary


def write_result(paths: FoldPaths, summary: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
    """`result.npz` then `result.json`, each atomically: the JSON marks the fold done."""
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    atomic_write(paths.result_npz, lambda f: f.write(buffer.getvalue()))
    atomic_save_json(summary, paths.result_json)


def load_result(paths: FoldPaths) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """A done fold's summary and arrays."""
    summary = json.loads(paths.result_json.read_text())
    with np.load(paths.result_npz, allow_pickle=False) as npz:
        arrays = {name: npz[name] for name in npz.files}
    return summary, arrays
