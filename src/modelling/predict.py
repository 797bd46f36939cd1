"""Predict with a trained checkpoint: `saimp predict` (`python -m src.modelling.predict`).

    saimp predict --checkpoint PTH (--raw-dir DIR | --data-dir LAKE) [--from DATE]
        [--to DATE] [--latest] [--out FILE.parquet] [--device cpu] [--batch-size 512]

Writes one row per window (the window's last bar, its symbol, the four calibrated
probabilities, the argmax class and the decision rule's class) to `--out`, by default
`{checkpoint_stem}_predictions.parquet` (`_latest.parquet` with --latest) beside the
checkpoint, and prints its path last.
`--from` is inclusive and `--to` exclusive, both on the window's last bar. The windows,
features and normalisation are those of training (`src/modelling/prediction/`); the
output is written to a temporary file and renamed, so an error leaves nothing behind.
"""

from __future__ import annotations

import argparse
import logging
import time
from collections.abc import Iterator
from pathlib import Path

import torch

from src.core import constants as C
from src.core.errors import ArgumentParser, UserError
from src.core.paths import writable_file
from src.core.threads import apply_thread_budget
from src.data.raw_checks import BAD_ROW_POLICIES, iso_ms
from src.data.split import parse_date_ms
from src.modelling.device import resolve_device
from src.modelling.prediction.output import PredictionWriter, SymbolPredictions
from src.modelling.prediction.predictor import DEFAULT_BATCH_SIZE, Predictor

logger = logging.getLogger(__name__)


def default_out(checkpoint: Path, latest: bool = False) -> Path:
    """Beside the checkpoint; --latest has its own file, so that a live call never
    replaces a full prediction."""
    kind = "latest" if latest else "predictions"
    return Path(checkpoint).with_name(f"{Path(checkpoint).stem}_{kind}.parquet")


def build_parser(prog: str = "saimp predict") -> argparse.ArgumentParser:
    p = ArgumentParser(
        prog=prog,
        description="Calibrated class probabilities and decisions of a checkpoint for every "
        "window of raw candles (--raw-dir) or of a prepared lake (--data-dir), or only the "
        "last window of each symbol (--latest). Writes a Parquet file and prints its path last.",
    )
    p.add_argument(
        "--checkpoint",
        type=Path,
        default=C.DEFAULT_CHECKPOINT,
        help="best checkpoint (.pth with its .json sidecar beside it)",
    )
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--raw-dir", type=Path, help="raw candles (Parquet, kline CSV or zip)")
    source.add_argument("--data-dir", type=Path, help="a lake prepared by saimp prepare")
    p.add_argument(
        "--from",
        dest="from_",
        metavar="DATE",
        help="first window end to predict, inclusive (ISO date or datetime, UTC)",
    )
    p.add_argument("--to", metavar="DATE", help="window ends before this one, exclusive (ISO, UTC)")
    p.add_argument(
        "--latest",
        action="store_true",
        help="only the last complete window of each symbol; prints its latency",
    )
    p.add_argument(
        "--out",
        type=Path,
        help="output .parquet (default: {checkpoint stem}_predictions.parquet, or "
        "_latest.parquet with --latest)",
    )
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto")
    p.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE, help="windows per pass")
    p.add_argument(
        "--on-bad-rows",
        choices=BAD_ROW_POLICIES,
        default="error",
        help="raw candles: stop at a broken row (error) or leave such rows out (drop)",
    )
    return p


def _range_words(from_ms: int | None, to_ms: int | None) -> str:
    if from_ms is None and to_ms is None:
        return ""
    lo = "the start" if from_ms is None else iso_ms(from_ms)
    hi = "the end" if to_ms is None else iso_ms(to_ms)
    return f" from {lo} to {hi}"


def _log_latest(part: SymbolPredictions) -> None:
    row = part.table.to_pylist()[0]
    p = row[f"p_{row['predicted']}"]
    logger.info(
        "[LATEST] %s %s: %s (p %.3f), decision %s | latency %.1f ms (features, normalisation, "
        "windowing, model and calibration, from the data in memory; reading files and loading "
        "the model not counted)",
        part.symbol,
        row["timestamp"].isoformat(),
        row["predicted"],
        p,
        row["decision"],
        part.seconds * 1000,
    )


def _check_flags(args: argparse.Namespace) -> tuple[int | None, int | None, torch.device, Path]:
    """--from/--to as epoch ms, the device and the output path, checked before any work."""
    from_ms = parse_date_ms(args.from_, "--from") if args.from_ is not None else None
    to_ms = parse_date_ms(args.to, "--to") if args.to is not None else None
    if from_ms is not None and to_ms is not None and to_ms <= from_ms:
        raise UserError(f"--to {args.to} must be after --from {args.from_}")
    if args.batch_size < 1:
        raise UserError(f"--batch-size must be >= 1, got {args.batch_size}")
    device = resolve_device(args.device)
    out = Path(args.out or default_out(args.checkpoint, args.latest))
    if out.is_dir():
        raise UserError(
            f"--out: {out} is a directory; name a file, e.g. {out / 'predictions.parquet'}"
        )
    return from_ms, to_ms, device, writable_file(out, "--out")


def _predictions(
    args: argparse.Namespace, predictor: Predictor, from_ms: int | None, to_ms: int | None
) -> tuple[str, Iterator[SymbolPredictions]]:
    """The source's name for messages and its predictions, symbol by symbol (or file by file)."""
    if args.raw_dir is not None:
        from src.modelling.prediction.from_candles import predict_raw_dir

        parts = predict_raw_dir(
            predictor,
            args.raw_dir,
            from_ms=from_ms,
            to_ms=to_ms,
            latest=args.latest,
            on_bad_rows=args.on_bad_rows,
        )
        return f"--raw-dir {args.raw_dir}", parts
    from src.modelling.prediction.from_lake import open_lake, predict_lake

    index = open_lake(predictor, args.data_dir)  # checked against the checkpoint here
    parts = predict_lake(predictor, index, from_ms=from_ms, to_ms=to_ms, latest=args.latest)
    return f"--data-dir {args.data_dir}", parts


def _write(
    parts: Iterator[SymbolPredictions], writer: PredictionWriter, latest: bool, span: str
) -> tuple[set[str], float]:
    """Write every part; log each --latest row. Returns the symbols with a row and the
    seconds from data in memory to probabilities, summed."""
    symbols: set[str] = set()
    seconds = 0.0
    for part in parts:
        if part.table.num_rows:
            symbols.add(part.symbol)
            seconds += part.seconds
            if latest:
                _log_latest(part)
        elif latest:
            logger.warning("%s: no complete window%s", part.symbol, span)
        writer.write(part.table)
    return symbols, seconds


def main(argv: list[str] | None = None, prog: str = "saimp predict") -> int:
    args = build_parser(prog).parse_args(argv)
    from_ms, to_ms, device, out = _check_flags(args)
    started = time.perf_counter()
    predictor = Predictor.load(args.checkpoint, device=device, batch_size=args.batch_size)
    if device.type == "cpu":  # share the cores as training does (src/core/threads.py)
        _, governor = apply_thread_budget()
        predictor.tick = governor.tick if governor is not None else None
    if args.latest:
        predictor.warm_up()  # latency as a live process has it, not the first pass's
    source, parts = _predictions(args, predictor, from_ms, to_ms)
    span = _range_words(from_ms, to_ms)
    meta = {
        "checkpoint": str(args.checkpoint),
        "epoch": predictor.sidecar.get("epoch"),
        "source": source,
        "from_ms": from_ms,
        "to_ms": to_ms,
        "latest": args.latest,
        "calibration": (predictor.sidecar.get("calibration") or {}).get("method", "none"),
        "decision": (predictor.sidecar.get("decision") or {}).get("rule", "argmax"),
    }
    with PredictionWriter(out, predictor.schema, meta) as writer:
        symbols, seconds = _write(parts, writer, args.latest, span)
        if writer.rows == 0:
            raise UserError(
                f"{source}: no complete window{span}; nothing written (widen --from/--to, "
                "or check the data's dates)"
            )
        writer.commit()
    elapsed = time.perf_counter() - started
    threads = f", {torch.get_num_threads()} threads" if device.type == "cpu" else ""
    logger.info(
        f"[PREDICT] {writer.rows:,} windows of {len(symbols)} symbol(s) from {source}{span} "
        f"in {elapsed:.1f} s ({writer.rows / max(elapsed, 1e-9):,.0f} windows/s; {seconds:.1f} s "
        f"from data in memory to probabilities) | {args.checkpoint} (epoch "
        f"{predictor.sidecar.get('epoch')}) | device {device}{threads}, batch {args.batch_size}"
    )
    logger.info(str(out))
    return 0


if __name__ == "__main__":
    from src.cli import run_module

    run_module(__spec__.name)  # as the module, so its log lines are under `src`
