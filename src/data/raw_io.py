"""Read raw candles (docs/design.md, "Data contract") and check them.

Accepted files in the raw directory (not its subdirectories):

* ``*.parquet`` with the contract's columns: ``timestamp`` (a timestamp type, or
  integer epoch time), ``open, high, low, close, volume``, optional
  ``taker_buy_volume`` and ``symbol``. Other columns are ignored.
* ``*.csv`` / ``*.zip`` (a zip holding one ``.csv``), in one of two layouts:
  - Binance kline export without a header: open_time, open, high, low, close, volume,
    close_time, quote_volume, count, taker_buy_volume, taker_buy_quote_volume, ignore;
  - a header row naming the columns. Names are matched case-insensitively, and
    Binance's ``open_time`` stands in for ``timestamp`` (Binance's newer exports carry
    such a header).

Timestamps are UTC; a timestamp type without a time zone is read as UTC. Integer
timestamps are epoch time whose unit is told by magnitude (Binance switched from
milliseconds to microseconds in 2025): below 1e11 seconds, below 1e14 milliseconds,
below 1e17 microseconds, else nanoseconds; one file must use one unit. Everything is
converted to int64 milliseconds.

Without a ``symbol`` column, the symbol is the first ``-`` or ``_`` separated token of
the file name, upper-cased (``BTCUSDT-1m-2024-01.zip`` -> ``BTCUSDT``).

Rejected, with a `DataError` naming the file, column and row: a missing or mistyped
column, a null, NaN or infinite value, a price <= 0, a negative volume, taker-buy
volume above the volume, high < low, open or close outside [low, high], timestamps that
are not strictly increasing within a symbol (unsorted or duplicate, also across files),
and a file that cannot be parsed (corrupt Parquet, CSV or zip).
"""

from __future__ import annotations

import re
import zipfile
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from src.core import constants as C
from src.core.errors import DataError

RAW_SUFFIXES: tuple[str, ...] = (".parquet", ".csv", ".zip")

PRICE_COLUMNS: tuple[str, ...] = ("open", "high", "low", "close")
NUMBER_COLUMNS: tuple[str, ...] = (*PRICE_COLUMNS, "volume", "taker_buy_volume")
TAKER_COL = "taker_buy_volume"

#: Column layout of a Binance kline CSV (no header).
BINANCE_COLUMNS: tuple[str, ...] = (
    "open_time",
    "open",
    "high",
    "low",
    "close",
    "volume",
    "close_time",
    "quote_volume",
    "count",
    "taker_buy_volume",
    "taker_buy_quote_volume",
    "ignore",
)

# Upper bounds (exclusive) of epoch values in seconds, ms, us; above: ns.
_UNIT_BOUNDS = (1e11, 1e14, 1e17)
_UNIT_TO_MS = (1000.0, 1.0, 1e-3, 1e-6)
_UNIT_NAMES = ("seconds", "milliseconds", "microseconds", "nanoseconds")
# open/close may sit outside [low, high] by this relative amount (float32 rounding).
_CONTAIN_TOL = 1e-6


@dataclass(frozen=True)
class RawCandles:
    """One symbol's candles from one file (or, after `merge_chunks`, several files)."""

    symbol: str
    source: str
    """File name(s), for messages."""
    timestamp: np.ndarray
    """int64 epoch milliseconds, UTC."""
    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    volume: np.ndarray
    taker_buy_volume: np.ndarray | None
    """float64, or None when the source has no taker-buy volume."""
    row: np.ndarray
    """Row number of each candle in its file (0 = first data row), for messages."""

    def __len__(self) -> int:
        return int(self.timestamp.shape[0])


def iso_ms(ms: int) -> str:
    """Epoch milliseconds as an ISO-8601 UTC string (`2024-01-01T00:00:00+00:00`)."""
    try:
        return datetime.fromtimestamp(int(ms) / 1000.0, tz=UTC).isoformat()
    except (OverflowError, OSError, ValueError):  # beyond year 9999: still say something
        return f"{int(ms)} ms since 1970"


def symbol_from_filename(path: Path) -> str:
    """`BTCUSDT-1m-2024-01.zip` -> `BTCUSDT`; `synth_2024-01.parquet` -> `SYNTH`."""
    return re.split(r"[-_]", path.name.split(".")[0])[0].upper()


def list_raw_files(raw_dir: Path) -> list[Path]:
    """The raw candle files directly in `raw_dir`, sorted by name."""
    raw_dir = Path(raw_dir)
    if raw_dir.is_file():
        raise DataError(
            f"--raw-dir {raw_dir} is a file; pass the directory that holds the candle files "
            f"(--raw-dir {raw_dir.parent})"
        )
    if not raw_dir.is_dir():
        raise DataError(
            f"--raw-dir {raw_dir} does not exist; pass the directory of your candle files, "
            f"or create synthetic data with `saimp synthetic --raw-dir {raw_dir}`"
        )
    files = sorted(
        p
        for p in raw_dir.iterdir()
        if p.is_file() and p.suffix.lower() in RAW_SUFFIXES and not p.name.startswith(".")
    )
    if not files:
        raise DataError(
            f"no raw candle files ({', '.join('*' + s for s in RAW_SUFFIXES)}) in {raw_dir}"
        )
    return files


# --------------------------------------------------------------------------- reading


def _one_line(err: Exception) -> str:
    """An exception's message on one line (Arrow messages span several)."""
    return " ".join(str(err).split())


def _read_parquet(path: Path) -> pa.Table:
    try:
        schema = pq.read_schema(path)
        _require_columns(path, schema.names)
        return pq.read_table(path, columns=_contract_columns(schema.names))
    except (pa.ArrowException, OSError) as err:
        raise DataError(f"{path}: not a readable Parquet file ({_one_line(err)})") from None


def _zip_csv_bytes(path: Path) -> bytes:
    """The bytes of the single CSV inside a zip."""
    try:
        with zipfile.ZipFile(path) as zf:
            members = [
                i
                for i in zf.infolist()
                if not i.is_dir()
                and i.filename.lower().endswith(".csv")
                and not i.filename.startswith("__MACOSX")
            ]
            if len(members) != 1:
                raise DataError(
                    f"{path}: a zip must hold exactly one .csv file, found {len(members)}"
                )
            return zf.read(members[0])
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError) as err:
        raise DataError(f"{path}: not a readable zip file ({_one_line(err)})") from None


def _first_line(data: bytes) -> str:
    head = data[:4096].decode("utf-8-sig", errors="replace")
    return head.splitlines()[0] if head.strip() else ""


def _looks_like_number(text: str) -> bool:
    try:
        float(text.strip().strip('"'))
    except ValueError:
        return False
    return True


def _binance_options() -> tuple[pacsv.ReadOptions, pacsv.ConvertOptions]:
    """Options for a headerless Binance kline CSV."""
    return (
        pacsv.ReadOptions(column_names=list(BINANCE_COLUMNS)),
        pacsv.ConvertOptions(
            include_columns=["open_time", *NUMBER_COLUMNS],
            column_types={"open_time": pa.int64(), **dict.fromkeys(NUMBER_COLUMNS, pa.float64())},
        ),
    )


def _headed_options(header: str, path: Path) -> tuple[pacsv.ReadOptions, pacsv.ConvertOptions]:
    """Options for a CSV whose first row names the columns (case-insensitive;
    open_time stands in for timestamp)."""
    names = [n.strip().strip('"').lower() for n in header.split(",")]
    if C.TIMESTAMP_COL not in names and "open_time" in names:
        names[names.index("open_time")] = C.TIMESTAMP_COL
    _require_columns(path, names)
    types = {n: pa.float64() for n in NUMBER_COLUMNS if n in names}
    if C.SYMBOL_COL in names:
        types[C.SYMBOL_COL] = pa.string()
    # The timestamp's type is inferred: integers stay int64, ISO text becomes a timestamp.
    return (
        pacsv.ReadOptions(column_names=names, skip_rows=1),
        pacsv.ConvertOptions(include_columns=_contract_columns(names), column_types=types),
    )


def _bad_value(data: bytes, read: pacsv.ReadOptions, err: Exception) -> str | None:
    """For Arrow's "In CSV column #k: conversion error", name the column and the first
    row whose value is not a number (Arrow names neither)."""
    match = re.search(r"CSV column #(\d+)", str(err))
    if not match or "conversion error" not in str(err):
        return None
    name = read.column_names[int(match.group(1))]
    try:
        values = (
            pacsv.read_csv(
                pa.BufferReader(data),
                read_options=read,
                convert_options=pacsv.ConvertOptions(
                    include_columns=[name], column_types={name: pa.string()}
                ),
            )
            .column(name)
            .to_pylist()
        )
    except pa.ArrowException:
        return None
    row = next((i for i, v in enumerate(values) if v and not _looks_like_number(v)), None)
    if row is None:
        return None
    return f"column '{name}' has a value that is not a number at row {row}: {values[row]!r}"


def _read_csv_bytes(data: bytes, path: Path) -> pa.Table:
    """Parse a Binance (headerless) or headed CSV into contract column names."""
    header = _first_line(data)
    if not header:
        return pa.table({})
    binance = _looks_like_number(header.split(",")[0])
    read, convert = _binance_options() if binance else _headed_options(header, path)
    try:
        table = pacsv.read_csv(pa.BufferReader(data), read_options=read, convert_options=convert)
    except pa.ArrowException as err:
        detail = _bad_value(data, read, err) or _one_line(err)
        raise DataError(f"{path}: cannot parse CSV ({detail})") from None
    if binance:
        table = table.rename_columns([C.TIMESTAMP_COL, *table.column_names[1:]])
    return table


def read_table(path: Path) -> pa.Table:
    """Read one raw file into an Arrow table with contract column names (types unchecked)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        return _read_parquet(path)
    if suffix == ".zip":
        return _read_csv_bytes(_zip_csv_bytes(path), path)
    if suffix == ".csv":
        try:
            data = path.read_bytes()
        except OSError as err:
            raise DataError(f"{path}: cannot read ({_one_line(err)})") from None
        return _read_csv_bytes(data, path)
    raise DataError(f"{path}: unsupported file type; use {', '.join(RAW_SUFFIXES)}")


# ------------------------------------------------------------------- types and nulls


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


def _first_null_row(column: pa.ChunkedArray) -> int:
    return int(np.flatnonzero(column.is_null().to_numpy(zero_copy_only=False))[0])


def _check_no_nulls(path: Path, table: pa.Table) -> None:
    for name in table.column_names:
        column = table.column(name)
        if column.null_count:
            raise DataError(
                f"{path}: column '{name}' is empty at row {_first_null_row(column)}; "
                "fill or drop that row"
            )


def _epoch_to_ms(values: np.ndarray, path: Path) -> np.ndarray:
    """Integer epoch time in s, ms, us or ns (told by magnitude) -> int64 ms."""
    if values.size == 0:
        return values.astype(np.int64)
    if values.min() < 0:
        row = int(np.argmax(values < 0))
        raise DataError(f"{path}: column 'timestamp' is negative at row {row}")
    unit = np.searchsorted(_UNIT_BOUNDS, values, side="right")
    if unit.min() != unit.max():
        row = int(np.argmax(unit != unit[0]))
        raise DataError(
            f"{path}: column 'timestamp' mixes time units: row 0 looks like "
            f"{_UNIT_NAMES[unit[0]]}, row {row} like {_UNIT_NAMES[unit[row]]}"
        )
    scale = _UNIT_TO_MS[int(unit[0])]
    if scale >= 1:
        return values.astype(np.int64) * int(scale)
    return values.astype(np.int64) // int(round(1 / scale))


def _timestamp_ms(column: pa.ChunkedArray, path: Path) -> np.ndarray:
    kind = column.type
    if pa.types.is_timestamp(kind):
        # Arrow stores instants as UTC counts in the type's unit, whatever its tz.
        counts = column.cast(pa.int64()).to_numpy()
        if kind.unit == "s":
            return counts * 1000
        return counts // {"ms": 1, "us": 1_000, "ns": 1_000_000}[kind.unit]
    if pa.types.is_integer(kind):
        return _epoch_to_ms(column.cast(pa.int64()).to_numpy(), path)
    raise DataError(
        f"{path}: column 'timestamp' has type {kind}; expected a timestamp (UTC) or "
        "integer epoch milliseconds"
    )


def _float_column(table: pa.Table, name: str, path: Path) -> np.ndarray:
    column = table.column(name)
    kind = column.type
    if not (pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_decimal(kind)):
        raise DataError(f"{path}: column '{name}' has type {kind}; expected a number")
    return column.cast(pa.float64()).to_numpy()


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
    """(symbol, rows) for each symbol in the file; all rows when there is only one."""
    if column is None:
        return [(symbol_from_filename(path), slice(None))]
    symbols = sorted(pc.unique(column).to_pylist())
    if len(symbols) == 1:
        return [(symbols[0], slice(None))]
    return [(s, pc.equal(column, s).to_numpy(zero_copy_only=False)) for s in symbols]


def table_to_candles(table: pa.Table, path: Path) -> list[RawCandles]:
    """Check types and nulls, split by symbol, and validate each symbol's candles."""
    path = Path(path)
    _require_columns(path, table.column_names)
    _check_no_nulls(path, table)
    ts = _timestamp_ms(table.column(C.TIMESTAMP_COL), path)
    numbers = {n: _float_column(table, n, path) for n in NUMBER_COLUMNS if n in table.column_names}
    selections = _symbol_selections(_symbol_column(table, path), path)
    rows = np.arange(table.num_rows, dtype=np.int64)

    def chunk(symbol: str, sel: np.ndarray | slice) -> RawCandles:
        return RawCandles(
            symbol=str(symbol),
            source=path.name,
            timestamp=ts[sel],
            open=numbers["open"][sel],
            high=numbers["high"][sel],
            low=numbers["low"][sel],
            close=numbers["close"][sel],
            volume=numbers["volume"][sel],
            taker_buy_volume=numbers[TAKER_COL][sel] if TAKER_COL in numbers else None,
            row=rows[sel],
        )

    chunks = [chunk(symbol, sel) for symbol, sel in selections]
    for c in chunks:
        validate_candles(c, path)
    return chunks


def read_raw_file(path: Path) -> list[RawCandles]:
    """Read and validate one raw file; one `RawCandles` per symbol (none if it is empty)."""
    table = read_table(path)
    if table.num_rows == 0:
        return []
    return table_to_candles(table, path)


# ------------------------------------------------------------------------ validation


def _reject_first(bad: np.ndarray, c: RawCandles, path: Path, what: str) -> None:
    """Raise for the first row where `bad` holds, describing it with `what`."""
    if bad.any():
        i = int(np.argmax(bad))
        raise DataError(
            f"{path}: {what} at row {int(c.row[i])} ({iso_ms(c.timestamp[i])}, "
            f"symbol {c.symbol}); fix or drop that row"
        )


def validate_candles(c: RawCandles, path: Path) -> None:
    """Raise `DataError` for the first row that breaks the contract (module docstring)."""
    numbers = {n: getattr(c, n) for n in (*PRICE_COLUMNS, "volume")}
    if c.taker_buy_volume is not None:
        numbers[TAKER_COL] = c.taker_buy_volume
    for name, x in numbers.items():
        _reject_first(np.isnan(x), c, path, f"column '{name}' is NaN")
        _reject_first(np.isinf(x), c, path, f"column '{name}' is infinite")
    for name in PRICE_COLUMNS:
        _reject_first(numbers[name] <= 0, c, path, f"column '{name}' is <= 0")
    _reject_first(c.volume < 0, c, path, "column 'volume' is negative")
    if c.taker_buy_volume is not None:
        _reject_first(c.taker_buy_volume < 0, c, path, "column 'taker_buy_volume' is negative")
        _reject_first(
            c.taker_buy_volume > c.volume * (1 + _CONTAIN_TOL),
            c,
            path,
            "column 'taker_buy_volume' is above 'volume'",
        )
    _reject_first(c.high < c.low, c, path, "'high' is below 'low'")
    top = np.maximum(c.open, c.close)
    bottom = np.minimum(c.open, c.close)
    _reject_first(top > c.high * (1 + _CONTAIN_TOL), c, path, "open/close is above 'high'")
    _reject_first(bottom < c.low * (1 - _CONTAIN_TOL), c, path, "open/close is below 'low'")
    _check_increasing(c, path)


def _check_increasing(c: RawCandles, path: Path) -> None:
    step = np.diff(c.timestamp)
    if step.size and step.min() <= 0:
        i = int(np.argmax(step <= 0)) + 1
        problem = "duplicates" if step[i - 1] == 0 else "is earlier than"
        raise DataError(
            f"{path}: column 'timestamp' at row {int(c.row[i])} ({iso_ms(c.timestamp[i])}, "
            f"symbol {c.symbol}) {problem} the previous row ({iso_ms(c.timestamp[i - 1])}); "
            "sort by time and drop duplicates"
        )


def merge_chunks(chunks: list[RawCandles]) -> RawCandles:
    """Join one symbol's chunks from several files in time order.

    Files may be listed in any order, but their time ranges must not overlap.
    """
    if not chunks:
        raise ValueError("merge_chunks needs at least one chunk")
    if len({c.symbol for c in chunks}) != 1:
        raise ValueError("merge_chunks joins chunks of one symbol")
    ordered = sorted(chunks, key=lambda c: int(c.timestamp[0]))
    for prev, nxt in zip(ordered, ordered[1:], strict=False):
        if nxt.timestamp[0] <= prev.timestamp[-1]:
            raise DataError(
                f"symbol {nxt.symbol}: {nxt.source} starts at {iso_ms(nxt.timestamp[0])}, "
                f"not after the end of {prev.source} ({iso_ms(prev.timestamp[-1])}); "
                "remove the overlapping or duplicate file"
            )
    if len(ordered) == 1:
        return ordered[0]
    has_taker = [c.taker_buy_volume is not None for c in ordered]
    if any(has_taker) and not all(has_taker):
        # The imbalance features must mean the same throughout a symbol's history.
        without = ordered[has_taker.index(False)].source
        raise DataError(
            f"symbol {ordered[0].symbol}: {without} has no 'taker_buy_volume' but other "
            "files of the symbol do; add the column or drop it from every file"
        )

    def cat(name: str) -> np.ndarray:
        return np.concatenate([getattr(c, name) for c in ordered])

    return RawCandles(
        symbol=ordered[0].symbol,
        source=", ".join(c.source for c in ordered),
        timestamp=cat("timestamp"),
        open=cat("open"),
        high=cat("high"),
        low=cat("low"),
        close=cat("close"),
        volume=cat("volume"),
        taker_buy_volume=cat(TAKER_COL) if all(has_taker) else None,
        row=cat("row"),
    )


def read_raw_dir(raw_dir: Path) -> tuple[dict[str, RawCandles], list[Path]]:
    """All candles in `raw_dir`, one merged `RawCandles` per symbol (sorted by symbol),
    and the files that held no rows."""
    by_symbol: dict[str, list[RawCandles]] = {}
    empty: list[Path] = []
    for path in list_raw_files(raw_dir):
        chunks = read_raw_file(path)
        if not chunks:
            empty.append(path)
        for chunk in chunks:
            by_symbol.setdefault(chunk.symbol, []).append(chunk)
    if not by_symbol:
        raise DataError(f"the raw files in {raw_dir} hold no candles")
    return {s: merge_chunks(by_symbol[s]) for s in sorted(by_symbol)}, empty


__all__ = [
    "BINANCE_COLUMNS",
    "RAW_SUFFIXES",
    "RawCandles",
    "iso_ms",
    "list_raw_files",
    "merge_chunks",
    "read_raw_dir",
    "read_raw_file",
    "read_table",
    "symbol_from_filename",
    "table_to_candles",
    "validate_candles",
]
