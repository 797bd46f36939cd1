"""Fit a checkpoint's calibration and decision rule: `saimp calibrate`
(`python -m src.modelling.calibrate`).

    saimp calibrate [--checkpoint data/saimp_best.pth] [--data-dir LAKE]
        [--objective macro_f1] [--batch-size 512] [--device auto]

Runs the checkpoint over its own validation split (the split bounds, normalisation and
windows of its training run, as `saimp evaluate` reads them; never the test split),
fits the calibration candidates and the decision rule there
(`prediction/fit_calibration.py`), rewrites the sidecar atomically with its
`"calibration"` and `"decision"` sections, prints a table and prints the sidecar's path
last. `saimp train` does the same for its best checkpoint when it ends.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from src.core import constants as C
from src.core.errors import ArgumentParser, UserError
from src.core.threads import apply_thread_budget
from src.modelling.device import resolve_device
from src.modelling.prediction import decision as dec
from src.modelling.prediction.fit_calibration import (
    DEFAULT_BATCH_SIZE,
    CalibrationResult,
    calibrate_checkpoint,
    describe_rule,
)

logger = logging.getLogger(__name__)


def format_result(result: CalibrationResult) -> str:
    """The console table: each candidate's val log-loss and ECE, the chosen one, and the
    decision rule against argmax."""
    c, d = result.calibration, result.decision
    lines = [
        f"{'calibration':<22} | {'val log-loss':>12} {'val ECE':>8}   (each block of val "
        "scored by a fit on the other blocks)"
    ]
    lines.append("-" * 49)
    for method, s in c["val"].items():
        mark = "  <- chosen (lowest log-loss)" if method == c["method"] else ""
        lines.append(f"{method:<22} | {s['log_loss']:12.4f} {s['ece']:8.4f}{mark}")
    before, after = c["val"]["none"], c["val_fit"]
    lines.append(
        f"{c['method']} refitted on all {c['n']:,} val windows: log-loss "
        f"{before['log_loss']:.4f} -> {after['log_loss']:.4f}, ECE {before['ece']:.4f} -> "
        f"{after['ece']:.4f} (before: plain softmax)"
    )
    v, name = d["val"], d["objective"]
    lines.append(
        f"decision rule: {describe_rule(d)} | val {name}: rule {v[d['rule']]:.4f}, "
        f"argmax {v['argmax']:.4f}, thresholds {v['thresholds']:.4f} "
        f"({v['thresholds_cross_fitted']:.4f} out of sample), uncalibrated argmax "
        f"{v['argmax_uncalibrated']:.4f}"
    )
    if d["rule"] == "argmax":
        lines.append("  (thresholds did not beat argmax on val out of sample: argmax kept)")
    lines.append(f"[CALIBRATE] {result.seconds:.1f}s")
    return "\n".join(lines)


def build_parser(prog: str = "saimp calibrate") -> argparse.ArgumentParser:
    p = ArgumentParser(
        prog=prog,
        description="Fit a checkpoint's probability calibration and decision rule on its "
        "validation split and write them into its JSON sidecar (saimp evaluate and saimp "
        "predict use them). Prints the sidecar's path last.",
    )
    p.add_argument("--checkpoint", type=Path, default=C.DEFAULT_CHECKPOINT)
    p.add_argument(
        "--data-dir", type=Path, help="processed lake (default: the one the checkpoint trained on)"
    )
    p.add_argument(
        "--objective",
        default=dec.DEFAULT_OBJECTIVE,
        choices=sorted(dec.OBJECTIVES),
        help="what the decision rule's thresholds maximise on val (default: macro_f1)",
    )
    p.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE)
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    return p


def main(argv: list[str] | None = None, prog: str = "saimp calibrate") -> int:
    args = build_parser(prog).parse_args(argv)
    device = resolve_device(args.device)
    if args.batch_size < 1:
        raise UserError(f"--batch-size must be >= 1, got {args.batch_size}")
    governor = None
    if device.type == "cpu":
        _, governor = apply_thread_budget()  # share the cores as training does
    result = calibrate_checkpoint(
        args.checkpoint,
        data_dir=args.data_dir,
        objective=args.objective,
        batch_size=args.batch_size,
        device=device,
        tick=governor.tick if governor is not None else None,
    )
    logger.info(
        f"[CALIBRATE] {args.checkpoint} on the val split of {result.data_dir}: "
        f"{result.calibration['n']:,} windows"
    )
    logger.info(format_result(result))
    logger.info(str(result.sidecar_path))
    return 0


if __name__ == "__main__":
    from src.cli import run_module

    run_module(__spec__.name)  # as the module, so its log lines are under `src`
