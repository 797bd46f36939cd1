"""Predictions from raw candles: in memory (`predict`, the Python API) or a raw
directory (`predict_raw_dir`, one symbol at a time).

The features are `saimp prepare`'s (`src.data.features.compute_features`) over the
symbol's own bars, normalised with the checkpoint's statistics. A feature at bar t uses
bars t - WARMUP_BARS .. t only, so a window ending at bar e needs the WARMUP_BARS +
seq_len - 1 bars before e: those are taken from the candles before the first
predicted bar, and only the bars from there on are computed. A symbol with fewer than
WARMUP_BARS + seq_len bars (up to `--to`) has no window: a `DataError` naming it.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from src.core import constants as C
from src.core.errors import DataError
from src.data.features import FEATURE_NAMES, WARMUP_BARS, compute_features
from src.data.raw_io import (
    BadRowPolicy,
    RawCandles,
    iso_ms,
    list_raw_files,
    merge_chunks,
    read_symbol,
    symbols_in_file,
    table_to_candles,
)
from src.modelling.prediction.output import SymbolPredictions
from src.modelling.prediction.predictor import (
    DEFAULT_BATCH_SIZE,
    Predictor,
    interval_words,
    time_ms,
)
from src.modelling.prediction.windows import rows_in_range, usable_rows, window_ends

logger = logging.getLogger(__name__)

_NO_ORDER_FLOW_MEAN, _NO_ORDER_FLOW_STD = 0.0, 1.0  # a constant-0 imbalance, as fitted


def check_raw_features(predictor: Predictor, where: str) -> None:
    """`DataError` when the checkpoint was trained on features other than those
    `compute_features` makes from candles (then only its lake can feed it)."""
    if predictor.features != list(FEATURE_NAMES):
        raise DataError(
            f"{where}: the checkpoint's features ({', '.join(predictor.features)}) are not the "
            f"ones computed from candles ({', '.join(FEATURE_NAMES)}); predict from a lake "
            "prepared like its training lake (--data-dir)"
        )


def check_bar_ms(predictor: Predictor, bar_ms: int, symbol: str, where: str) -> None:
    """`DataError` when a symbol's bar interval is not the checkpoint's."""
    if predictor.bar_ms is not None and int(bar_ms) != predictor.bar_ms:
        raise DataError(
            f"{where}: symbol {symbol} has {interval_words(int(bar_ms))} bars, the checkpoint "
            f"was trained on {interval_words(predictor.bar_ms)} bars; predict from candles of "
            "the checkpoint's interval"
        )


def _warn_without_order_flow(predictor: Predictor, candles: RawCandles) -> None:
    """The imbalance features are 0 without `taker_buy_volume`: say so when the model
    was trained on data that had it (its imbalance statistics are not those of 0)."""
    if candles.taker_buy_volume is not None or "imbalance" not in predictor.features:
        return
    j = predictor.features.index("imbalance")
    mean, std = predictor.normalizer.mean[j], predictor.normalizer.std[j]
    if (mean, std) != (_NO_ORDER_FLOW_MEAN, _NO_ORDER_FLOW_STD):
        logger.warning(
            "symbol %s has no taker_buy_volume: its order-flow features are 0, while the "
            "checkpoint was trained with order flow; add the column for its predictions",
            candles.symbol,
        )


def _normalised_features(predictor: Predictor, c: RawCandles, lo: int, hi: int) -> np.ndarray:
    """(hi - lo, F) normalised float32 features of bars lo..hi-1 (NaN in the first
    WARMUP_BARS rows of the slice, which lack their lookback inside it)."""
    s = slice(lo, hi)
    taker = None if c.taker_buy_volume is None else c.taker_buy_volume[s]
    feats = compute_features(c.open[s], c.high[s], c.low[s], c.close[s], c.volume[s], taker)
    return predictor.normalizer.apply_(feats)


def _windows(
    predictor: Predictor, c: RawCandles, bar_ms: int, lo: int, hi: int, first: int
) -> tuple[np.ndarray, np.ndarray]:
    """Normalised features of bars lo..hi-1 and the rows (relative to lo) that end a
    window at bar `first` or later."""
    feats = _normalised_features(predictor, c, lo, hi)
    ends = window_ends(
        c.timestamp[lo:hi],
        usable_rows(feats),
        seq_len=predictor.seq_len,
        max_gap_ms=predictor.max_gap_ms(bar_ms),
    )
    return feats, ends[ends >= first - lo]


def predict_symbol(
    predictor: Predictor,
    candles: RawCandles,
    bar_ms: int,
    *,
    where: str,
    from_ms: int | None = None,
    to_ms: int | None = None,
    latest: bool = False,
) -> SymbolPredictions:
    """Predictions for every window of one symbol ending in [from_ms, to_ms), or with
    `latest` only the last such window (none when it has no complete window there).

    Raises `DataError` for another bar interval than the checkpoint's, or for fewer
    than WARMUP_BARS + seq_len bars before `to_ms` (when it has any bar in range).
    `where` names the source in messages (`--raw-dir DIR`, `candles`).
    """
    started = time.perf_counter()
    check_bar_ms(predictor, bar_ms, candles.symbol, where)
    ts = candles.timestamp
    first, hi = rows_in_range(ts, from_ms, to_ms)
    seq_len = predictor.seq_len
    lookback = WARMUP_BARS + seq_len - 1  # bars before a window's last one that it needs
    if first == hi:  # no bar of this symbol in the range
        empty = np.empty(0, np.int64), np.empty((0, len(predictor.class_names)))
        return SymbolPredictions(candles.symbol, predictor.table(candles.symbol, *empty), 0.0)
    if hi < lookback + 1:
        raise DataError(
            f"{where}: symbol {candles.symbol} has {hi} bars"
            f"{'' if to_ms is None else ' before --to'}; a prediction needs the {lookback} "
            f"bars before the predicted one ({WARMUP_BARS} of feature warm-up + {seq_len - 1} "
            f"more of its {seq_len}-bar window), {lookback + 1} in all; add earlier candles"
        )
    _warn_without_order_flow(predictor, candles)
    lo_min = max(0, first - lookback)
    if latest:
        # The live use: compute a short tail only. A window found in a tail is complete
        # and exact there (its rows are past the tail's own warm-up), and every window
        # ending later would be found too, so the tail's last window is the last one;
        # without one, look 4x further back, down to the range's own lookback.
        size = lookback + 1
        while True:
            lo = max(lo_min, hi - size)
            feats, ends = _windows(predictor, candles, bar_ms, lo, hi, first)
            if len(ends) or lo == lo_min:
                ends = ends[-1:]
                break
            size *= 4
    else:
        lo = lo_min
        feats, ends = _windows(predictor, candles, bar_ms, lo, hi, first)
    probs = predictor.probabilities(feats, ends)
    seconds = time.perf_counter() - started
    if len(ends) and not latest and lo + ends[0] > first:  # not from the range's first bar
        logger.info(
            "%s: first window at %s (the bars before it are its warm-up, or gaps)",
            candles.symbol,
            iso_ms(int(ts[lo + ends[0]])),
        )
    return SymbolPredictions(
        candles.symbol, predictor.table(candles.symbol, ts[lo + ends], probs), seconds
    )


# ---------------------------------------------------------------------------- in memory


def _as_arrow(candles: Any) -> pa.Table:
    """An Arrow table of `candles`: a `pyarrow.Table` as is, a `pandas.DataFrame`
    converted (its index dropped). pandas is not a dependency: a DataFrame means the
    caller has imported it."""
    if isinstance(candles, pa.Table):
        return candles
    pd = sys.modules.get("pandas")
    if pd is not None and isinstance(candles, pd.DataFrame):
        return pa.Table.from_pandas(candles, preserve_index=False)
    raise TypeError(
        f"candles must be a pyarrow.Table or a pandas.DataFrame, got {type(candles).__name__}"
    )


def candles_by_symbol(candles: Any, where: str = "candles") -> list[tuple[RawCandles, int]]:
    """(candles, bar_ms) per symbol, sorted by symbol, from an Arrow table or pandas
    DataFrame with the raw contract's columns (timestamp, open, high, low, close,
    volume, optional taker_buy_volume, symbol), each symbol's rows in time order.

    The rows are checked as `saimp prepare` checks a file's (`raw_io.table_to_candles`):
    a bad row, a missing column or rows out of order raise `DataError`. The bar interval
    is each symbol's timestamp grid.
    """
    table = _as_arrow(candles)
    if C.SYMBOL_COL not in table.column_names:
        raise DataError(
            f"{where}: no 'symbol' column; add one naming the instrument of each row "
            "(e.g. df['symbol'] = 'BTCUSDT')"
        )
    out = []
    for chunk in table_to_candles(table, Path(where)):
        merged = merge_chunks([chunk])
        out.append((merged.candles, merged.bar_ms))
    return out


def predict(
    model: Any,
    sidecar: dict[str, Any],
    candles: Any,
    *,
    start: Any = None,
    end: Any = None,
    latest: bool = False,
    device: Any = "cpu",
    batch_size: int = DEFAULT_BATCH_SIZE,
) -> pa.Table:
    """Calibrated probabilities and decisions for the windows of `candles`.

    `model, sidecar`: from `load_model(checkpoint)`. `candles`: a `pyarrow.Table` or a
    `pandas.DataFrame` of raw candles (columns timestamp, open, high, low, close,
    volume, optional taker_buy_volume, symbol; each symbol in time order, at the
    checkpoint's bar interval). `start` (inclusive) and `end` (exclusive) bound the
    timestamps of the windows' last bars: ISO strings (naive = UTC), epoch ms or
    datetimes. `latest`: only the last complete window of each symbol.

    Returns an Arrow table (`.to_pandas()` for a DataFrame): timestamp (the window's
    last bar, timestamp[ms, UTC]), symbol, p_Neutro, p_Stop, p_Long, p_SuperLong
    (float32), predicted (argmax class name), decision (the sidecar's decision rule),
    sorted by symbol then time. Raises `DataError` for bad candles, another bar
    interval, or a symbol with too little history (module docstring).
    """
    predictor = Predictor(model, sidecar, device=device, batch_size=batch_size)
    check_raw_features(predictor, "candles")
    from_ms, to_ms = time_ms(start, "start"), time_ms(end, "end")
    parts = [
        predict_symbol(
            predictor, c, bar_ms, where="candles", from_ms=from_ms, to_ms=to_ms, latest=latest
        ).table
        for c, bar_ms in candles_by_symbol(candles)
    ]
    return pa.concat_tables(parts) if parts else predictor.schema.empty_table()


# ---------------------------------------------------------------------------- raw files


def raw_files_by_symbol(raw_dir: Path) -> dict[str, list[Path]]:
    """symbol -> the raw files holding it, sorted by symbol (reads only symbol columns)."""
    by_symbol: dict[str, list[Path]] = {}
    for path in list_raw_files(raw_dir):
        for symbol in symbols_in_file(path):
            by_symbol.setdefault(symbol, []).append(path)
    if not by_symbol:
        raise DataError(f"--raw-dir {raw_dir}: the raw files hold no candles")
    return {s: by_symbol[s] for s in sorted(by_symbol)}


def predict_raw_dir(
    predictor: Predictor,
    raw_dir: Path,
    *,
    from_ms: int | None = None,
    to_ms: int | None = None,
    latest: bool = False,
    on_bad_rows: BadRowPolicy = "error",
) -> Iterator[SymbolPredictions]:
    """`predict_symbol` for each symbol of a raw directory in turn (one symbol's candles
    in memory at a time), in symbol order."""
    where = f"--raw-dir {raw_dir}"
    check_raw_features(predictor, where)
    for symbol, paths in raw_files_by_symbol(Path(raw_dir)).items():
        read = read_symbol(paths, symbol, on_bad_rows)
        yield predict_symbol(
            predictor,
            read.candles,
            read.bar_ms,
            where=where,
            from_ms=from_ms,
            to_ms=to_ms,
            latest=latest,
        )
