"""The lake's rows of a period, as the backtest reads them (one symbol at a time)."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from src.core import constants as C
from src.core.errors import DataError
from src.data.lake import LakeIndex
from src.modelling.trading.engine import SymbolBars

COLUMNS: tuple[str, ...] = (C.TIMESTAMP_COL, C.LABEL_COL, C.CLOSE_COL, *C.TRADE_COLUMNS)


def _ms(table: pa.Table, name: str) -> np.ndarray:
    return table.column(name).cast(pa.int64()).to_numpy()


def symbol_bars(
    index: LakeIndex, *, from_ms: int | None, to_ms: int | None
) -> Iterator[SymbolBars]:
    """Each symbol's rows with timestamps in [from_ms, to_ms), in symbol order; raises
    `DataError` for a lake prepared before the trade columns existed."""
    by_symbol: dict[str, list] = {}
    for lf in index.files:
        if (to_ms is not None and lf.first_ms >= to_ms) or (
            from_ms is not None and lf.last_ms < from_ms
        ):
            continue
        by_symbol.setdefault(lf.symbol, []).append(lf)
    for symbol in sorted(by_symbol):
        parts = []
        for lf in sorted(by_symbol[symbol], key=lambda f: f.first_ms):
            names = pq.read_schema(lf.path).names
            missing = [c for c in COLUMNS if c not in names]
            if missing:
                raise DataError(
                    f"{lf.path}: no '{missing[0]}' column (a lake prepared before backtests "
                    "were possible); prepare the lake again with saimp prepare"
                )
            parts.append(pq.read_table(lf.path, columns=list(COLUMNS)))
        table = pa.concat_tables(parts)
        ts = _ms(table, C.TIMESTAMP_COL)
        keep = np.ones(ts.size, bool)
        if from_ms is not None:
            keep &= ts >= from_ms
        if to_ms is not None:
            keep &= ts < to_ms
        if not keep.any():
            continue
        idx = np.flatnonzero(keep)

        def col(name: str, idx: np.ndarray = idx, table: pa.Table = table) -> np.ndarray:
            return table.column(name).to_numpy()[idx]

        yield SymbolBars(
            symbol=symbol,
            timestamp=ts[idx],
            close=col(C.CLOSE_COL).astype(np.float64),
            label=col(C.LABEL_COL).astype(np.int8),
            exit_ms={t: _ms(table, f"{t}_exit")[idx] for t in C.TRADE_NAMES},
            gross={t: col(f"{t}_return") for t in C.TRADE_NAMES},
            risk={t: col(f"{t}_risk") for t in C.TRADE_NAMES},
        )
