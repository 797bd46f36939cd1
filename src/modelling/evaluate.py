"""Evaluate a checkpoint on a split: `saimp evaluate` (`python -m src.modelling.evaluate`).

    saimp evaluate [--checkpoint data/saimp_best.pth] [--data-dir DIR] [--split test]
        [--out DIR] [--batch-size 512] [--device auto] [--null-draws 1000]

The model and the normalisation are rebuilt from the checkpoint's JSON sidecar (weights
loaded with `weights_only=True`). The split is the one training used: its bounds come
from the sidecar, never from the extent of the lake being read, so evaluating on a lake
that grew since training still tests on the same time range (plus any later bars). A
lake with another bar interval, other label settings or other features than the
checkpoint's is refused (`sidecar.lake_mismatch`). The loss uses the class weights the
training loss used (the sidecar's resolved numbers). A split whose true labels hold one
class gets a `warning` in the report: its macro-F1 and accuracy are not scores.

Writes `{checkpoint_stem}_{split}_report.json` and `.png` (confusion heatmap) next to
the checkpoint, or in `--out`, prints a table, and prints the JSON's path last. The
numbers are computed in `evaluation/report.py` (see there for the baselines and the
chance level).
"""

from __future__ import annotations

import argparse
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from src.core import constants as C
from src.core.errors import ArgumentParser, DataError, UserError
from src.core.paths import writable_dir
from src.flags import alias
from src.modelling.checkpointing.atomic import atomic_save_json
from src.modelling.checkpointing.best import sidecar_path
from src.modelling.checkpointing.sidecar import lake_mismatch, sidecar_class_weights
from src.modelling.evaluation import report as rp
from src.modelling.evaluation.confusion_plot import plot_confusion
from src.modelling.evaluation.inference import eval_config, load_model, predict, split_bounds_of
from src.modelling.labels import lake_label

logger = logging.getLogger(__name__)

DEFAULT_BATCH_SIZE = 512
DEFAULT_NULL_DRAWS = 1000
SPLIT_NAMES = ("train", "val", "test")


@dataclass
class EvalResult:
    report: dict[str, Any]
    json_path: Path
    png_path: Path


# ---------------------------------------------------------------------------- files


def report_paths(checkpoint: Path, split: str, out_dir: Path | None) -> tuple[Path, Path]:
    base = Path(out_dir) if out_dir is not None else Path(checkpoint).parent
    stem = f"{Path(checkpoint).stem}_{split}_report"
    return base / f"{stem}.json", base / f"{stem}.png"


# ---------------------------------------------------------------------------- pipeline


def _horizon_bars(index: Any, sidecar: dict[str, Any]) -> int:
    """The label horizon in bars: from the sidecar's labels (the lake's, checked against
    the evaluated lake), else the lake's, else (older sidecars) the run's config."""
    label = (
        sidecar.get("label")
        or lake_label(index.meta)
        or (sidecar.get("config") or {}).get("label")
        or {}
    )
    minutes = label.get("horizon_minutes")
    if not minutes or not index.bar_ms:
        return 0
    return int(math.ceil(minutes * 60_000 / index.bar_ms))


def _train_counts(
    sidecar: dict[str, Any], summary: dict[str, Any]
) -> tuple[np.ndarray | None, str]:
    recorded = (sidecar.get("label_counts") or {}).get("train")
    if recorded is not None and sum(recorded) > 0:
        return np.asarray(recorded, dtype=np.int64), "training split (checkpoint sidecar)"
    lake = (summary.get("label_counts") or {}).get("train")
    if lake is not None and sum(lake) > 0:
        return np.asarray(lake, dtype=np.int64), "training split (lake, training time range)"
    return None, "evaluated split"


def evaluate_checkpoint(
    checkpoint: Path | str = C.DEFAULT_CHECKPOINT,
    *,
    data_dir: Path | str | None = None,
    split: str = "test",
    out_dir: Path | str | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    device: torch.device | str | None = None,
    null_draws: int = DEFAULT_NULL_DRAWS,
    seed: int = 0,
    log: Callable[[str], None] = logger.info,
) -> EvalResult:
    """Rebuild the checkpoint's model and normalisation, stream `split`, write the report."""
    from src.data.dataloader import build_data
    from src.data.lake import scan_lake_for
    from src.data.normalize import Normalizer

    if split not in SPLIT_NAMES:
        raise UserError(f"--split: unknown split {split!r}; choose one of {', '.join(SPLIT_NAMES)}")
    if batch_size < 1:
        raise UserError(f"--batch-size must be >= 1, got {batch_size}")
    checkpoint = Path(checkpoint)
    started = time.perf_counter()
    model, sidecar = load_model(checkpoint)
    json_path, png_path = report_paths(checkpoint, split, Path(out_dir) if out_dir else None)
    # Before the work, not after it; the reports go beside the checkpoint without --out.
    writable_dir(json_path.parent, "--out" if out_dir else "--checkpoint")
    bounds = split_bounds_of(sidecar, sidecar_path(checkpoint))
    if data_dir is None:
        data_dir = (sidecar.get("config") or {}).get("paths", {}).get("data_dir")
        if data_dir is None:
            raise UserError(
                "--data-dir: the sidecar does not name the training lake; pass --data-dir DIR"
            )
    data_dir = Path(data_dir)
    normalizer = Normalizer.from_dict(sidecar["normalizer"])
    cfg = eval_config(sidecar, data_dir, batch_size, bounds)
    try:
        # The lake against the checkpoint first, before a loader fails on what differs
        # (a scan reads no feature column: milliseconds per 100k rows).
        mismatch = lake_mismatch(sidecar, scan_lake_for(cfg.data, data_dir))
        if mismatch is None:
            data = build_data(cfg, splits=(split,), normalizer=normalizer)
    except DataError as err:
        raise DataError(f"{err} [split bounds from {sidecar_path(checkpoint)}]") from None
    if mismatch:
        raise DataError(mismatch)
    if (data.bounds.val_start_ms, data.bounds.test_start_ms) != (
        bounds.val_start_ms,
        bounds.test_start_ms,
    ):  # the ISO round trip must be exact; never evaluate on a shifted split
        raise RuntimeError(f"split bounds {data.bounds} differ from the checkpoint's {bounds}")
    if data.index.num_features != model.cfg.n_features:
        raise DataError(
            f"{data_dir}: {data.index.num_features} features per bar, the checkpoint expects "
            f"{model.cfg.n_features}; evaluate on a lake prepared with the same features"
        )

    # Fixed, chronological order for every split (train is built shuffled for training):
    # the chance level shifts predictions along time.
    getattr(data, split).shuffle = False
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    weights = sidecar_class_weights(sidecar)  # the numbers the training loss used
    preds = predict(model, getattr(data, f"{split}_dl"), device=device, class_weights=weights)
    expected = data.index.num_windows(split)
    if preds.y_true.size != expected:
        raise RuntimeError(f"streamed {preds.y_true.size} windows of {split}, expected {expected}")

    train_counts, counts_from = _train_counts(sidecar, data.summary)
    report = rp.build_report(
        preds.y_true,
        preds.y_pred,
        class_names=tuple(sidecar.get("class_names") or C.CLASS_NAMES),
        train_counts=train_counts,
        train_counts_from=counts_from,
        null_draws=null_draws,
        min_shift=_horizon_bars(data.index, sidecar) + model.cfg.seq_len,
        seed=seed,
        extra={
            "checkpoint": str(checkpoint),
            "epoch": sidecar.get("epoch"),
            "split": split,
            "data_dir": str(data_dir),
            "split_bounds": bounds.to_dict(),
            "split_bounds_from": str(sidecar_path(checkpoint)),
            "loss": preds.loss if weights is not None else None,
            "loss_class_weights": weights,
            "png": str(png_path),
        },
    )
    plot_confusion(report, png_path)
    atomic_save_json(report, json_path)

    log(
        f"[EVAL] {checkpoint} (epoch {sidecar.get('epoch')}) on the {split} split of {data_dir}: "
        f"{report['n_samples']:,} windows | bounds val {bounds.to_dict()['val_start']}, "
        f"test {bounds.to_dict()['test_start']} (from the sidecar) | device {device}"
    )
    log(rp.format_report(report))
    if report["loss"] is not None:
        log(f"loss (class-weighted cross-entropy, as val_loss in training): {report['loss']:.4f}")
    log(f"[EVAL] heatmap {png_path} | {time.perf_counter() - started:.1f}s")
    log(str(json_path))
    return EvalResult(report, json_path, png_path)


# ---------------------------------------------------------------------------- command line


def build_parser(prog: str = "saimp evaluate") -> argparse.ArgumentParser:
    p = ArgumentParser(
        prog=prog,
        description="Evaluate a best checkpoint on a split of the lake: per-class precision, "
        "recall and F1, macro-F1, balanced accuracy, confusion matrix, and the same numbers "
        "for a majority-class and a random (class-frequency) baseline. Writes "
        "{stem}_{split}_report.json and .png and prints the JSON's path last.",
    )
    p.add_argument("--checkpoint", type=Path, default=C.DEFAULT_CHECKPOINT)
    p.add_argument(
        "--data-dir", type=Path, help="processed lake (default: the one the checkpoint trained on)"
    )
    alias(p, "--data", "--data-dir", type=Path)
    p.add_argument("--split", default="test", choices=SPLIT_NAMES)
    p.add_argument("--out", type=Path, help="report directory (default: beside the checkpoint)")
    p.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE)
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument(
        "--null-draws",
        type=int,
        default=DEFAULT_NULL_DRAWS,
        help="shifted-prediction draws for the chance level of macro-F1 (0: skip)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the chance-level draws")
    return p


def main(argv: list[str] | None = None, prog: str = "saimp evaluate") -> int:
    args = build_parser(prog).parse_args(argv)
    device = None if args.device == "auto" else args.device
    if device is not None:
        try:
            torch.device(device)
        except RuntimeError:
            raise UserError(f"--device: unknown device {device!r}") from None
    if args.null_draws < 0:
        raise UserError(f"--null-draws must be >= 0, got {args.null_draws}")
    evaluate_checkpoint(
        args.checkpoint,
        data_dir=args.data_dir,
        split=args.split,
        out_dir=args.out,
        batch_size=args.batch_size,
        device=device,
        null_draws=args.null_draws,
        seed=args.seed,
    )
    return 0


if __name__ == "__main__":
    from src.cli import run_module

    run_module(__spec__.name)  # as the module, so its log lines are under `src`
