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

The report's headline metrics (top-level keys, as in reports before calibration) are
the argmax of the model's raw logits. When the sidecar has a `calibration` (and a
`decision` rule, both from `saimp calibrate` or the end of `saimp train`), the report
adds `calibration` (log-loss and ECE on this split before and after it) and `decision`
(the metrics of the rule's classes), computed with `apply_calibration` and `decide`,
the functions `saimp predict` uses; without them, the plain softmax and argmax.

Writes `{checkpoint_stem}_{split}_report.json`, `.png` (confusion heatmap of the raw
argmax) and `_reliability.png` (reliability diagram before and after calibration) next
to the checkpoint, or in `--out`, prints a table, and prints the JSON's path last. The
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
from src.core.threads import apply_thread_budget
from src.flags import alias
from src.modelling.checkpointing.atomic import atomic_save_json
from src.modelling.checkpointing.best import sidecar_path
from src.modelling.checkpointing.sidecar import sidecar_class_weights
from src.modelling.device import resolve_device
from src.modelling.evaluation import report as rp
from src.modelling.evaluation.confusion_plot import plot_confusion
from src.modelling.evaluation.inference import load_model, open_split, predict
from src.modelling.evaluation.reliability_plot import plot_reliability
from src.modelling.evaluation.report_files import report_paths
from src.modelling.labels import lake_label
from src.modelling.prediction.calibration import apply_calibration, softmax
from src.modelling.prediction.decision import decide

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
    tick: Callable[[], Any] | None = None,
    costs: Any = None,
    short_stops: bool = False,
    backtest_draws: int = 100,
) -> EvalResult:
    """Rebuild the checkpoint's model and normalisation, stream `split`, write the report.

    The report's top-level metrics are the argmax of the model's raw logits, as before
    calibration existed; `report["calibration"]` and `report["decision"]` hold the
    sidecar's calibration (log-loss and ECE before and after) and the metrics of its
    decision rule, computed with `apply_calibration` and `decide` as `saimp predict` does.
    """
    if split not in SPLIT_NAMES:
        raise UserError(f"--split: unknown split {split!r}; choose one of {', '.join(SPLIT_NAMES)}")
    if batch_size < 1:
        raise UserError(f"--batch-size must be >= 1, got {batch_size}")
    checkpoint = Path(checkpoint)
    started = time.perf_counter()
    model, sidecar = load_model(checkpoint)
    json_path, png_path = report_paths(checkpoint, split, Path(out_dir) if out_dir else None)
    reliability_png = json_path.with_name(json_path.stem + "_reliability.png")
    # Before the work, not after it; the reports go beside the checkpoint without --out.
    writable_dir(json_path.parent, "--out" if out_dir else "--checkpoint")
    opened = open_split(
        checkpoint, model, sidecar, data_dir=data_dir, split=split, batch_size=batch_size
    )
    data, data_dir, bounds = opened.data, opened.data_dir, opened.bounds

    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    weights = sidecar_class_weights(sidecar)  # the numbers the training loss used
    preds = predict(
        model, getattr(data, f"{split}_dl"), device=device, class_weights=weights, tick=tick
    )
    expected = data.index.num_windows(split)
    if preds.y_true.size != expected:
        raise RuntimeError(f"streamed {preds.y_true.size} windows of {split}, expected {expected}")
    # What `saimp predict` computes for the same windows: the same two functions.
    calibration, decision = sidecar.get("calibration"), sidecar.get("decision")
    probs = apply_calibration(preds.logits, calibration)
    y_rule = decide(probs, decision)

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
    class_names = report["class_names"]
    report["calibration"] = {
        **rp.calibration_report(preds.y_true, softmax(preds.logits), probs, calibration),
        "png": str(reliability_png),
    }
    report["decision"] = rp.decision_report(
        preds.y_true, y_rule, decide(probs, None), decision, class_names
    )
    report["backtest"] = _backtest_section(
        checkpoint, model, sidecar, data_dir, split, device, batch_size, costs, short_stops,
        backtest_draws, seed, log,
    )  # fmt: skip
    plot_confusion(report, png_path)
    cal = report["calibration"]
    plot_reliability(
        cal["reliability"],
        reliability_png,
        title=f"{checkpoint.name}, {split} split: calibration {cal['method']}",
        ece={k: cal[k]["ece"] for k in ("before", "after")},
    )
    atomic_save_json(report, json_path)

    log(
        f"[EVAL] {checkpoint} (epoch {sidecar.get('epoch')}) on the {split} split of {data_dir}: "
        f"{report['n_samples']:,} windows | bounds val {bounds.to_dict()['val_start']}, "
        f"test {bounds.to_dict()['test_start']} (from the sidecar) | device {device}"
    )
    log(rp.format_report(report))
    if report["loss"] is not None:
        log(f"loss (class-weighted cross-entropy, as val_loss in training): {report['loss']:.4f}")
    log("")
    log(rp.format_calibration(report))
    if report["backtest"] is not None:
        from src.modelling.trading.backtest_run import format_table

        bt = report["backtest"]
        log("")
        log(
            f"backtest (saimp backtest's rules; fees {bt['costs']['fee_bps']:g} + slippage "
            f"{bt['costs']['slippage_bps']:g} bps per side):"
        )
        log(format_table(bt))
    log(
        f"[EVAL] heatmap {png_path} | reliability diagram {reliability_png} | "
        f"{time.perf_counter() - started:.1f}s"
    )
    log(str(json_path))
    return EvalResult(report, json_path, png_path)


def _backtest_section(
    checkpoint: Path,
    model: torch.nn.Module,
    sidecar: dict[str, Any],
    data_dir: Path,
    split: str,
    device: torch.device,
    batch_size: int,
    costs: Any,
    short_stops: bool,
    draws: int,
    seed: int,
    log: Callable[[str], None],
) -> dict[str, Any] | None:
    """The split traded as `saimp backtest` trades it (no equity arrays), or None with a
    warning for a lake prepared before it carried the trades' columns."""
    from src.modelling.prediction.from_lake import open_lake
    from src.modelling.prediction.predictor import Predictor
    from src.modelling.trading.backtest_run import backtest_split, split_range
    from src.modelling.trading.engine import Costs

    costs = costs or Costs()
    predictor = Predictor(model, sidecar, device=device, batch_size=batch_size)
    from_ms, to_ms = split_range(sidecar, checkpoint, split)
    try:
        index = open_lake(predictor, Path(data_dir), "evaluate")
        section = backtest_split(
            predictor, index, from_ms, to_ms, costs=costs, short_stops=short_stops,
            draws=draws, seed=seed,
        )  # fmt: skip
    except DataError as err:
        logger.warning(f"no backtest: {err}")
        return None
    section.pop("equity")
    section["costs"] = {"fee_bps": costs.fee_bps, "slippage_bps": costs.slippage_bps}
    section["short_stops"] = short_stops
    return section


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
    p.add_argument("--fee-bps", type=float, default=0.0, help="backtest: fee per side, bps")
    p.add_argument(
        "--slippage-bps", type=float, default=0.0, help="backtest: slippage per side, bps"
    )
    p.add_argument("--short-stops", action="store_true", help="backtest: open a short on Stop")
    p.add_argument(
        "--random-draws",
        type=int,
        default=100,
        help="backtest: draws of the shifted-decision baseline",
    )
    return p


def main(argv: list[str] | None = None, prog: str = "saimp evaluate") -> int:
    args = build_parser(prog).parse_args(argv)
    device = resolve_device(args.device)
    if args.null_draws < 0:
        raise UserError(f"--null-draws must be >= 0, got {args.null_draws}")
    if args.seed < 0:  # numpy's generators take no negative seed
        raise UserError(f"--seed must be >= 0, got {args.seed}")
    if args.random_draws < 0:
        raise UserError(f"--random-draws must be >= 0, got {args.random_draws}")
    from src.modelling.trading.engine import Costs

    try:
        costs = Costs(fee_bps=args.fee_bps, slippage_bps=args.slippage_bps)
    except ValueError as err:
        raise UserError(str(err)) from None
    governor = None
    if device.type == "cpu":
        _, governor = apply_thread_budget()  # share the cores as training does
    evaluate_checkpoint(
        args.checkpoint,
        data_dir=args.data_dir,
        split=args.split,
        out_dir=args.out,
        batch_size=args.batch_size,
        device=device,
        null_draws=args.null_draws,
        seed=args.seed,
        tick=governor.tick if governor is not None else None,
        costs=costs,
        short_stops=args.short_stops,
        backtest_draws=args.random_draws,
    )
    return 0


if __name__ == "__main__":
    from src.cli import run_module

    run_module(__spec__.name)  # as the module, so its log lines are under `src`
