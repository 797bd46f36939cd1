"""One symbol of `saimp prepare`: raw candles in, that symbol's lake files out.

A function of its inputs only, run in a worker process per symbol, so a worker holds
one symbol at a time and the lake is the same whatever the number of workers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from src.config import LabelConfig
from src.core.constants import TRADE_NAMES
from src.core.errors import DataError
from src.data.features import FEATURE_NAMES, WARMUP_BARS, compute_features
from src.data.label_mix import move_histogram
from src.data.labels import causal_volatility, horizon_moves, labels_and_trades
from src.data.lake_format import TS_TYPE, lake_metadata, lake_schema, write_symbol_files
from src.data.raw_io import RawCandles, read_symbol

MOVE_SAMPLE = 20_000
"""Bars per symbol whose horizon moves feed the barrier suggestion (evenly spaced)."""

BAD_ROW_SCHEMA = pa.schema(
    [
        pa.field("file", pa.string()),
        pa.field("row", pa.int64()),
        pa.field("symbol", pa.string()),
        pa.field("timestamp", TS_TYPE),
        pa.field("reason", pa.string()),
    ]
)


@dataclass(frozen=True)
class SymbolJob:
    symbol: str
    paths: list[Path]
    out_dir: Path
    label: LabelConfig
    row_group_rows: int
    on_bad_rows: str


@dataclass
class SymbolResult:
    symbol: str
    source: str
    bar_ms: int
    bars: int
    """Candles read (after bad rows and duplicates were left out)."""
    files: list[dict[str, Any]]
    bad_rows: pa.Table
    """`BAD_ROW_SCHEMA` rows left out under `--on-bad-rows drop`."""
    duplicates: int
    """Identical duplicate rows collapsed."""
    up_hist: np.ndarray = field(repr=False)
    down_hist: np.ndarray = field(repr=False)


def barrier_fractions(
    label: LabelConfig, candles: RawCandles, bar_ms: int
) -> tuple[np.ndarray | float, np.ndarray | float, np.ndarray | float, np.ndarray | None]:
    """(upper1, upper2, lower, horizon_vol): barrier distances as fractions of the
    close, per bar for volatility barriers, and the horizon volatility they scale
    (None for fixed barriers).

    Volatility barriers: the trailing RMS of 1-bar log returns over `vol_window` bars,
    scaled to the horizon by sqrt(horizon / bar) (a random walk's spread grows with the
    square root of time), times each multiple; NaN before the window fills.
    """
    if label.barriers == "fixed":
        return label.upper1_pct / 100, label.upper2_pct / 100, label.lower_pct / 100, None
    vol = causal_volatility(candles.timestamp, candles.close, label.vol_window)
    horizon_vol = vol * np.sqrt(label.horizon_minutes * 60_000 / bar_ms)
    return (
        label.upper1_mult * horizon_vol,
        label.upper2_mult * horizon_vol,
        label.lower_mult * horizon_vol,
        horizon_vol,
    )


def build_symbol_table(
    candles: RawCandles, bar_ms: int, label: LabelConfig
) -> tuple[pa.Table, np.ndarray, np.ndarray]:
    """Features and labels of one symbol's bars, in `lake_schema` order, plus the
    histograms of the horizon's largest rise and fall (`label_mix.move_histogram`, in
    the barriers' unit).

    Keeps the bars with a full feature (and volatility) warm-up behind them and a whole
    label horizon ahead; raises `DataError` when none is left.
    """
    horizon_ms = label.horizon_minutes * 60_000
    if horizon_ms < bar_ms:
        raise DataError(
            f"symbol {candles.symbol} ({candles.source}): the label horizon of "
            f"{label.horizon_minutes} min is shorter than its {bar_ms / 60_000:g}-min bars; "
            "raise --horizon-minutes"
        )
    feats = compute_features(
        candles.open,
        candles.high,
        candles.low,
        candles.close,
        candles.volume,
        candles.taker_buy_volume,
    )
    upper1, upper2, lower, horizon_vol = barrier_fractions(label, candles, bar_ms)
    labels, trades = labels_and_trades(
        candles.timestamp,
        candles.open,
        candles.high,
        candles.low,
        candles.close,
        horizon_ms=horizon_ms,
        upper1=upper1,
        upper2=upper2,
        lower=lower,
    )
    m = labels.label.shape[0]  # bars with a whole horizon ahead: 0 .. m-1
    ok = np.isfinite(feats[:m]).all(axis=1)
    if horizon_vol is not None:
        ok &= np.isfinite(horizon_vol[:m]) & (horizon_vol[:m] > 0)
    keep = np.flatnonzero(ok)
    if keep.size == 0:
        warmup = WARMUP_BARS if horizon_vol is None else max(WARMUP_BARS, label.vol_window)
        raise DataError(
            f"symbol {candles.symbol} ({candles.source}) has {len(candles)} bars; the warm-up "
            f"({warmup} bars) plus the label horizon ({label.horizon_minutes} min) leave none "
            "to label; add data or drop the symbol"
        )
    columns = [
        pa.array(candles.timestamp[keep], TS_TYPE),
        pa.repeat(pa.scalar(candles.symbol, pa.string()), keep.size),
        *(pa.array(np.ascontiguousarray(feats[keep, j])) for j in range(len(FEATURE_NAMES))),
        pa.array(labels.label[keep], pa.int8()),
        pa.array(labels.decided_ms[keep], TS_TYPE),
        pa.array(candles.close[keep], pa.float64()),
    ]
    for name in TRADE_NAMES:
        columns.append(pa.array(candles.timestamp[trades.exit_bar[name][keep]], TS_TYPE))
        columns.append(pa.array(trades.gross_return[name][keep], pa.float64()))
        columns.append(pa.array(trades.risk[name][keep], pa.float64()))
    table = pa.Table.from_arrays(columns, schema=lake_schema())

    sample = keep[:: max(1, keep.size // MOVE_SAMPLE)]
    up, down = horizon_moves(
        candles.timestamp,
        candles.high,
        candles.low,
        candles.close,
        horizon_ms=horizon_ms,
        rows=sample,
    )
    if horizon_vol is not None:  # in the barriers' unit: horizon volatilities
        up, down = up / horizon_vol[sample], down / horizon_vol[sample]
    return table, move_histogram(up), move_histogram(down)


def bad_rows_table(bad_rows: list[Any]) -> pa.Table:
    """`raw_checks.BadRow`s as a `BAD_ROW_SCHEMA` table."""
    return pa.Table.from_pydict(
        {
            "file": [b.file for b in bad_rows],
            "row": [b.row for b in bad_rows],
            "symbol": [b.symbol for b in bad_rows],
            "timestamp": pa.array([b.timestamp_ms for b in bad_rows], pa.int64()).cast(TS_TYPE),
            "reason": [b.reason for b in bad_rows],
        },
        schema=BAD_ROW_SCHEMA,
    )


def prepare_symbol(job: SymbolJob) -> SymbolResult:
    """Read, label and write one symbol (the unit of work of a prepare worker)."""
    read = read_symbol(job.paths, job.symbol, job.on_bad_rows)
    table, up_hist, down_hist = build_symbol_table(read.candles, read.bar_ms, job.label)
    files = write_symbol_files(
        job.symbol,
        table,
        job.out_dir,
        meta=lake_metadata(read.bar_ms, job.label),
        row_group_rows=job.row_group_rows,
    )
    return SymbolResult(
        symbol=job.symbol,
        source=read.candles.source,
        bar_ms=read.bar_ms,
        bars=len(read.candles),
        files=files,
        bad_rows=bad_rows_table(read.bad_rows),
        duplicates=read.duplicates,
        up_hist=up_hist,
        down_hist=down_hist,
    )
