"""The columns of raw candles (docs/design.md, "Data contract"): which are needed, their
types, empty values, epoch time units and the symbol column; part of reading raw candles
(`raw_io`).

Columns. ``timestamp, open, high, low, close, volume`` are required, ``taker_buy_volume``
and ``symbol`` optional; other columns are ignored. A missing or mistyped column, and an
empty ``symbol`` (the row belongs to no symbol), are a `DataError` naming the file.

Timestamps are UTC; a timestamp type without a time zone is read as UTC. Integer
timestamps are epoch time whose unit is told by magnitude (Binance switched from
milliseconds to microseconds in 2025): below 1e11 seconds, below 1e14 milliseconds,
below 1e17 microseconds, else nanoseconds; one file must use one unit. Everything is
converted to int64 milliseconds. A negative timestamp or mixed time units are a
`DataError` naming the file.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from src.core import constants as C
from src.core.errors import DataError
from src.data.raw_names import symbol_from_filename

PRICE_COLUMNS: tuple[str, ...] = ("open", "high", "low", "close")
NUMBER_COLUMNS: tuple[str, ...] = (*PRICE_COLUMNS, "volume", "taker_buy_volume")
TAKER_COL = "taker_buy_volume"

# Upper bounds (exclusive) of epoch values in seconds, ms, us; above: ns.
_UNIT_BOUNDS = (1e11, 1e14, 1e17)
_UNIT_TO_MS = (1000.0, 1.0, 1e-3, 1e-6)
_UNIT_NAMES = ("seconds", "milliseconds", "microseconds", "nanoseconds")


def _contract_columns(names: Iterable[str]) -> list[str]:
    """The contract's columns among `names`, in contract order (others are ignored)."""
    present = set(names)
    return [n for n in (*C.RAW_REQUIRED_COLUMNS, *C.RAW_OPTIONAL_COLUMNS) if n in present]


def _require_columns(path: Path, names: Iterable[str]) -> None:
    names = list(names)
    missing = [n for n in C.RAW_REQUIRED_COLUMNS if n not in names]
    if missing:
        raise DataError(
            f"{path}: missing column '{missing[0]}' (found: {', '.join(names) or 'none'}); "
            f"raw candles need {', '.join(C.RAW_REQUIRED_COLUMNS)}"
        )


def _null_mask(column: pa.ChunkedArray) -> np.ndarray:
    return column.is_null().to_numpy(zero_copy_only=False)


def _first_null_row(column: pa.ChunkedArray) -> int:
    return int(np.flatnonzero(_null_mask(column))[0])


def _empty_symbol(path: Path, row: int) -> DataError:
    return DataError(f"{path}: column 'symbol' is empty at row {row}; fill or drop that row")


def _check_no_nulls(path: Path, table: pa.Table, rows: np.ndarray) -> None:
    for name in table.column_names:
        column = table.column(name)
        if column.null_count:
            raise DataError(
                f"{path}: column '{name}' is empty at row {int(rows[_first_null_row(column)])}; "
                "fill or drop that row"
            )


def _epoch_to_ms(
    values: np.ndarray, path: Path, rows: np.ndarray, valid: np.ndarray | None = None
) -> np.ndarray:
    """Integer epoch time in s, ms, us or ns (told by magnitude) -> int64 ms. Only the
    `valid` values (default: all) are checked; `rows` number them in the file."""
    checked = values if valid is None else values[valid]
    checked_rows = rows if valid is None else rows[valid]
    if checked.size == 0:
        return values.astype(np.int64)
    if checked.min() < 0:
        row = int(checked_rows[np.argmax(checked < 0)])
        raise DataError(f"{path}: column 'timestamp' is negative at row {row}")
    unit = np.searchsorted(_UNIT_BOUNDS, checked, side="right")
    if unit.min() != unit.max():
        i = int(np.argmax(unit != unit[0]))
        raise DataError(
            f"{path}: column 'timestamp' mixes time units: row {int(checked_rows[0])} looks "
            f"like {_UNIT_NAMES[unit[0]]}, row {int(checked_rows[i])} like "
            f"{_UNIT_NAMES[unit[i]]}"
        )
    scale = _UNIT_TO_MS[int(unit[0])]
    if scale >= 1:
        return values.astype(np.int64) * int(scale)
    return values.astype(np.int64) // int(round(1 / scale))


def _timestamp_ms(
    column: pa.ChunkedArray, path: Path, rows: np.ndarray, valid: np.ndarray | None
) -> np.ndarray:
    """The timestamp column as int64 epoch ms (empty values become 0; `valid` marks the
    others)."""
    kind = column.type
    if pa.types.is_timestamp(kind):
        # Arrow stores instants as UTC counts in the type's unit, whatever its tz.
        counts = pc.fill_null(column.cast(pa.int64()), 0).to_numpy()
        if kind.unit == "s":
            return counts * 1000
        return counts // {"ms": 1, "us": 1_000, "ns": 1_000_000}[kind.unit]
    if pa.types.is_integer(kind):
        counts = pc.fill_null(column.cast(pa.int64()), 0).to_numpy()
        return _epoch_to_ms(counts, path, rows, valid)
    raise DataError(
        f"{path}: column 'timestamp' has type {kind}; expected a timestamp (UTC) or "
        "integer epoch milliseconds"
    )


def _float_column(table: pa.Table, name: str, path: Path) -> np.ndarray:
    """A number column as float64 (empty values become NaN)."""
    column = table.column(name)
    kind = column.type
    if not (pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_decimal(kind)):
        raise DataError(f"{path}: column '{name}' has type {kind}; expected a number")
    return column.cast(pa.float64()).to_numpy(zero_copy_only=False)


def _symbol_column(table: pa.Table, path: Path) -> pa.ChunkedArray | None:
    """The symbol column as strings, or None when the file has none."""
    if C.SYMBOL_COL not in table.column_names:
        return None
    column = table.column(C.SYMBOL_COL)
    if pa.types.is_dictionary(column.type):
        column = column.cast(column.type.value_type)
    if not (pa.types.is_string(column.type) or pa.types.is_large_string(column.type)):
        raise DataError(f"{path}: column 'symbol' has type {column.type}; expected a string")
    return column


def _symbol_selections(
    column: pa.ChunkedArray | None, path: Path
) -> list[tuple[str, np.ndarray | slice]]:
    """(symbol, rows) for each symbol in the file, sorted by symbol; all rows when there
    is only one. One sort, whatever the number of symbols."""
    if column is None:
        return [(symbol_from_filename(path), slice(None))]
    encoded = column.combine_chunks().dictionary_encode()
    names = encoded.dictionary.to_pylist()
    if not names:
        return []
    if len(names) == 1:
        return [(names[0], slice(None))]
    codes = encoded.indices.to_numpy()
    order = np.argsort(codes, kind="stable")  # rows of each symbol keep their order
    groups = np.split(order, np.cumsum(np.bincount(codes, minlength=len(names)))[:-1])
    return sorted(zip(names, groups, strict=True), key=lambda pair: pair[0])


__all__ = ["NUMBER_COLUMNS", "PRICE_COLUMNS", "TAKER_COL"]
