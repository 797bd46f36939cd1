"""Read raw candles (docs/design.md, "Data contract") and check them: the entry point.

The contract is told in parts, each in the module that implements it:

* `raw_files`: the accepted files (Parquet, Binance's headerless CSV, a CSV with a
  header, a zip holding one CSV), listing and parsing them;
* `raw_columns`: the columns, their types, empty values and epoch time units;
* `raw_names`: the symbol (and interval) a file name gives when there is no ``symbol``
  column;
* `raw_grid`: the bar interval, from the timestamps' grid and the file name;
* `raw_checks`: the value contract and bad rows, under ``on_bad_rows`` ``"error"``
  (the default) or ``"drop"`` (`BadRow` records).

This module joins them: `table_to_candles` / `read_raw_file` check one file's rows
symbol by symbol, `merge_chunks` joins a symbol's files, and `read_symbol` /
`read_raw_dir` read a directory. The public names of the parts are re-exported here.

Duplicates. A symbol's rows from all its files are put in time order (stable: files by
name, then rows), so its files may overlap. Rows at one timestamp that are identical in
every contract value are collapsed into one under both policies, and counted. Rows at
one timestamp that differ conflict: ``"error"`` raises naming the file(s), rows and
timestamp; ``"drop"`` leaves out every row at that timestamp (reason
``"conflicting duplicate timestamp"``).

Always a `DataError` naming the file: a missing or mistyped column, an empty ``symbol``
(the row belongs to no symbol), a negative timestamp or mixed time units, an interval
problem (`raw_grid`), a symbol with ``taker_buy_volume`` in some files only, a file that
cannot be parsed (corrupt Parquet, CSV or zip), and a symbol left with no valid row or,
when the interval is unknown, fewer than two bars.

One symbol at a time: `symbols_in_file` reads only the ``symbol`` column and
`read_symbol` only one symbol's rows (Parquet row group by row group, CSV block by
block). The results are deterministic: the same files give the same arrays and the
same `BadRow` order (by file name, then row).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from src.core import constants as C
from src.core.errors import DataError
from src.data.raw_checks import (
    BAD_ROW_POLICIES,
    CONFLICT_REASON,
    OUT_OF_ORDER_REASON,
    BadRow,
    BadRowPolicy,
    _check_policy,
    _duplicates,
    _late,
    _raise_order,
    _Triage,
    _value_checks,
    iso_ms,
)
from src.data.raw_columns import (
    NUMBER_COLUMNS,
    TAKER_COL,
    _check_no_nulls,
    _empty_symbol,
    _first_null_row,
    _float_column,
    _null_mask,
    _require_columns,
    _symbol_column,
    _symbol_selections,
    _timestamp_ms,
)
from src.data.raw_files import (
    BINANCE_COLUMNS,
    _symbol_rows,
    list_raw_files,
    read_table,
    symbols_in_file,
)
from src.data.raw_grid import (
    MIN_BAR_MS,
    _duration,
    _file_bar_ms,
    _interval_adjective,
    bar_grid_ms,
)
from src.data.raw_names import RAW_SUFFIXES, interval_from_filename, symbol_from_filename


@dataclass(frozen=True)
class RawCandles:
    """One symbol's candles from one file (or, after `merge_chunks`, several files):
    valid, strictly increasing in time."""

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
    bar_ms: int | None = None
    """Bar interval in milliseconds (`raw_grid`, "Bar interval"); None when a file
    has fewer than two timestamps and no interval in its name."""
    bad_rows: tuple[BadRow, ...] = ()
    """Rows left out under ``on_bad_rows="drop"``, by file name and row."""
    duplicates: int = 0
    """Rows collapsed into an identical row at the same timestamp."""

    def __len__(self) -> int:
        return int(self.timestamp.shape[0])


@dataclass(frozen=True)
class SymbolCandles:
    """All of one symbol's candles, merged from its files (`read_symbol`)."""

    candles: RawCandles
    """Sorted by time, de-duplicated; `source` lists the files by name."""
    bar_ms: int
    """Bar interval in milliseconds."""
    bad_rows: list[BadRow]
    """Rows left out (``on_bad_rows="drop"``), by file name, then row."""
    duplicates: int
    """Rows collapsed into an identical row at the same timestamp."""

    @property
    def symbol(self) -> str:
        return self.candles.symbol

    def __len__(self) -> int:
        return len(self.candles)


# ------------------------------------------------------------------ rows of a chunk


def _chunk(
    path: Path,
    symbol: str,
    policy: str,
    ts: np.ndarray,
    numbers: dict[str, np.ndarray],
    rows: np.ndarray,
    ts_null: np.ndarray,
    code: np.ndarray,
    reasons: list[str],
) -> RawCandles:
    """Check one symbol's rows of one file (in file order) and build its candles."""
    taker = numbers.get(TAKER_COL)
    triage = _Triage(policy, path, symbol, ts, rows, code, reasons)
    for bad, what in _value_checks(
        numbers["open"], numbers["high"], numbers["low"], numbers["close"], numbers["volume"], taker
    ):
        triage.reject(bad, what)
    values = [numbers[n] for n in NUMBER_COLUMNS if n in numbers]

    valid = np.flatnonzero(code < 0)
    late = _late(ts[valid])
    if policy == "error":
        _raise_order(path, symbol, ts, rows, values, late)
    triage.reject_at(valid[late], OUT_OF_ORDER_REASON)

    valid = np.flatnonzero(code < 0)
    dup = _duplicates(ts[valid], [x[valid] for x in values])
    triage.reject_at(valid[dup.conflict], CONFLICT_REASON)  # "error" raised above
    keep = valid[~dup.conflict & ~dup.extra]

    bad = np.flatnonzero(code >= 0)
    bad_rows = tuple(
        BadRow(
            file=path.name,
            row=int(rows[i]),
            symbol=symbol,
            timestamp_ms=None if ts_null[i] else int(ts[i]),
            reason=reasons[code[i]],
        )
        for i in bad
    )
    return RawCandles(
        symbol=symbol,
        source=path.name,
        timestamp=ts[keep],
        open=numbers["open"][keep],
        high=numbers["high"][keep],
        low=numbers["low"][keep],
        close=numbers["close"][keep],
        volume=numbers["volume"][keep],
        taker_buy_volume=None if taker is None else taker[keep],
        row=rows[keep],
        bar_ms=_file_bar_ms(ts[keep], path, symbol),
        bad_rows=bad_rows,
        duplicates=int(dup.extra.sum()),
    )


def _candles_from_table(
    table: pa.Table, path: Path, policy: str, rows: np.ndarray | None = None
) -> list[RawCandles]:
    """`table_to_candles` for a table whose rows are rows `rows` of the file (default:
    all, in order)."""
    _require_columns(path, table.column_names)
    n = table.num_rows
    rows = np.arange(n, dtype=np.int64) if rows is None else np.asarray(rows, dtype=np.int64)
    code = np.full(n, -1, dtype=np.int32)
    reasons: list[str] = []
    if policy == "error":
        _check_no_nulls(path, table, rows)
    else:
        symbols = table.column(C.SYMBOL_COL) if C.SYMBOL_COL in table.column_names else None
        if symbols is not None and symbols.null_count:  # the row belongs to no symbol
            raise _empty_symbol(path, int(rows[_first_null_row(symbols)]))
        for name in table.column_names:
            column = table.column(name)
            if column.null_count:
                new = _null_mask(column) & (code < 0)
                code[new] = len(reasons)
                reasons.append(f"column '{name}' is empty")
    ts_column = table.column(C.TIMESTAMP_COL)
    ts_null = _null_mask(ts_column) if ts_column.null_count else np.zeros(n, dtype=bool)
    ts = _timestamp_ms(ts_column, path, rows, ~ts_null if ts_column.null_count else None)
    numbers = {n: _float_column(table, n, path) for n in NUMBER_COLUMNS if n in table.column_names}
    chunks = []
    for symbol, sel in _symbol_selections(_symbol_column(table, path), path):
        chunks.append(
            _chunk(
                path,
                str(symbol),
                policy,
                ts[sel],
                {name: x[sel] for name, x in numbers.items()},
                rows[sel],
                ts_null[sel],
                code[sel].copy(),
                list(reasons),
            )
        )
    return chunks


def table_to_candles(
    table: pa.Table, path: Path, on_bad_rows: BadRowPolicy = "error"
) -> list[RawCandles]:
    """Check types and nulls, split by symbol, and check each symbol's rows.

    `table` holds the rows of file `path` (contract column names, as `read_table`
    gives). Returns one `RawCandles` per symbol, sorted by symbol: the valid rows in file
    order, identical duplicates collapsed (`duplicates`), with the file's `bar_ms` and,
    under ``on_bad_rows="drop"``, the rows left out (`bad_rows`). Raises `DataError` for
    the first bad row under "error", and for what is always an error (module docstring).
    """
    _check_policy(on_bad_rows)
    return _candles_from_table(table, Path(path), on_bad_rows)


def read_raw_file(path: Path, on_bad_rows: BadRowPolicy = "error") -> list[RawCandles]:
    """Read and check one raw file, all its symbols: one `RawCandles` per symbol,
    sorted by symbol (none if the file has no rows). See `table_to_candles`."""
    _check_policy(on_bad_rows)
    table = read_table(path)
    if table.num_rows == 0:
        return []
    return _candles_from_table(table, Path(path), on_bad_rows)


# ------------------------------------------------------------------------ validation


def validate_candles(c: RawCandles, path: Path) -> None:
    """Raise `DataError` for the first row of `c` that breaks the value contract or is
    not strictly later than the row before it."""
    triage = _Triage("error", Path(path), c.symbol, c.timestamp, c.row, np.empty(0), [])
    for bad, what in _value_checks(c.open, c.high, c.low, c.close, c.volume, c.taker_buy_volume):
        triage.reject(bad, what)
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


# --------------------------------------------------------------------------- merging


def _common_bar_ms(chunks: list[RawCandles]) -> int | None:
    """The one bar interval of a symbol's files (None if no file knows it); checks that
    the files lie on one grid."""
    known = [c for c in chunks if c.bar_ms is not None]
    if not known:
        return None
    a = known[0]
    assert a.bar_ms is not None
    for b in known[1:]:
        assert b.bar_ms is not None
        if b.bar_ms != a.bar_ms:
            raise DataError(
                f"symbol {a.symbol}: {a.source} has {_interval_adjective(a.bar_ms)} bars, "
                f"{b.source} has {_interval_adjective(b.bar_ms)} bars; prepare one interval "
                "at a time"
            )
    bar_ms = a.bar_ms
    placed = [c for c in chunks if len(c)]
    for b in placed[1:]:
        ref = placed[0]
        offset = (int(b.timestamp[0]) - int(ref.timestamp[0])) % bar_ms
        if offset:
            raise DataError(
                f"symbol {a.symbol}: {b.source} is offset by {_duration(offset)} from "
                f"{ref.source} on the {_interval_adjective(bar_ms)} grid ({ref.source} has a "
                f"bar at {iso_ms(ref.timestamp[0])}, {b.source} at {iso_ms(b.timestamp[0])}); "
                "use bar open times in every file"
            )
    return bar_ms


def merge_chunks(chunks: list[RawCandles], on_bad_rows: BadRowPolicy = "error") -> SymbolCandles:
    """Join one symbol's chunks (from `read_raw_file` / `table_to_candles`) into its
    whole history.

    Files may come in any order and may overlap: the rows are put in time order
    (stable: files by name, then rows), identical rows at one timestamp are collapsed
    (counted in `duplicates`), conflicting ones raise (``"error"``) or are all left out
    (``"drop"``, reason `CONFLICT_REASON`). `bad_rows` holds the chunks' bad rows and
    these, by file name and row.

    Raises `DataError` when the files have different bar intervals or are offset on the
    grid, some lack ``taker_buy_volume``, no valid row is left, or the interval is unknown
    (fewer than two bars and no interval in a file name). `ValueError` for no chunks or
    chunks of different symbols.
    """
    _check_policy(on_bad_rows)
    if not chunks:
        raise ValueError("merge_chunks needs at least one chunk")
    if len({c.symbol for c in chunks}) != 1:
        raise ValueError("merge_chunks joins chunks of one symbol")
    ordered = sorted(chunks, key=lambda c: c.source)
    symbol = ordered[0].symbol
    sources = ", ".join(c.source for c in ordered)
    has_taker = [c.taker_buy_volume is not None for c in ordered]
    if any(has_taker) and not all(has_taker):
        # The imbalance features must mean the same throughout a symbol's history.
        without = ordered[has_taker.index(False)].source
        raise DataError(
            f"symbol {symbol}: {without} has no 'taker_buy_volume' but other "
            "files of the symbol do; add the column or drop it from every file"
        )
    bar_ms = _common_bar_ms(ordered)

    names = ["open", "high", "low", "close", "volume"] + ([TAKER_COL] if all(has_taker) else [])
    file_of = np.repeat(np.arange(len(ordered)), [len(c) for c in ordered])
    ts = np.concatenate([c.timestamp for c in ordered])
    order = np.argsort(ts, kind="stable")
    ts, file_of = ts[order], file_of[order]
    rows = np.concatenate([c.row for c in ordered])[order]
    cols = {n: np.concatenate([getattr(c, n) for c in ordered])[order] for n in names}

    # A timestamp that conflicted inside a file is left out in every file.
    conflicted = np.array(
        sorted(
            {
                b.timestamp_ms
                for c in ordered
                for b in c.bad_rows
                if b.reason == CONFLICT_REASON and b.timestamp_ms is not None
            }
        ),
        dtype=np.int64,
    )
    gone = np.isin(ts, conflicted)
    rest = np.flatnonzero(~gone)
    dup = _duplicates(ts[rest], [cols[n][rest] for n in names])
    if on_bad_rows == "error" and dup.differs.any():
        j = int(np.argmax(dup.differs))
        i, j = rest[dup.first[j]], rest[j]
        raise DataError(
            f"symbol {symbol}: {ordered[file_of[i]].source} row {int(rows[i])} and "
            f"{ordered[file_of[j]].source} row {int(rows[j])} have the same timestamp "
            f"({iso_ms(ts[i])}) but different values; keep one of them"
        )
    gone[rest[dup.conflict]] = True
    keep = ~gone
    keep[rest[dup.extra]] = False

    bad_rows = [b for c in ordered for b in c.bad_rows]
    bad_rows += [
        BadRow(ordered[file_of[i]].source, int(rows[i]), symbol, int(ts[i]), CONFLICT_REASON)
        for i in np.flatnonzero(gone)
    ]
    bad_rows.sort(key=lambda b: (b.file, b.row))
    duplicates = sum(c.duplicates for c in ordered) + int(dup.extra.sum())

    n = int(keep.sum())
    if n == 0:
        first = f"; the first: {bad_rows[0].file} row {bad_rows[0].row}, {bad_rows[0].reason}"
        raise DataError(
            f"symbol {symbol}: no valid row left in {sources} ({len(bad_rows)} bad rows"
            f"{first if bad_rows else ''}); fix the data"
        )
    ts = ts[keep]
    if bar_ms is None:
        grid = bar_grid_ms(ts)
        if grid is None:
            raise DataError(
                f"symbol {symbol}: {n} bar in {sources}; need at least 2 to know the bar "
                f"interval (or name it in the file name, like {symbol}-1m-2024-01.csv)"
            )
        if grid < MIN_BAR_MS:
            raise DataError(
                f"symbol {symbol}: timestamps in {sources} are not on a regular bar grid "
                f"(steps have a greatest common divisor of {grid} ms); use bar open times"
            )
        bar_ms = grid

    candles = RawCandles(
        symbol=symbol,
        source=sources,
        timestamp=ts,
        open=cols["open"][keep],
        high=cols["high"][keep],
        low=cols["low"][keep],
        close=cols["close"][keep],
        volume=cols["volume"][keep],
        taker_buy_volume=cols[TAKER_COL][keep] if TAKER_COL in cols else None,
        row=rows[keep],
        bar_ms=bar_ms,
        bad_rows=tuple(bad_rows),
        duplicates=duplicates,
    )
    return SymbolCandles(candles=candles, bar_ms=bar_ms, bad_rows=bad_rows, duplicates=duplicates)


def read_symbol(
    paths: list[Path], symbol: str, on_bad_rows: BadRowPolicy = "error"
) -> SymbolCandles:
    """One symbol's candles from the files `paths` (any order), reading only that
    symbol's rows of each file, so one symbol at a time is in memory.

    Files without the symbol are skipped. See `merge_chunks` for the merge, and the
    module docstring for the rules. Raises `DataError` for a bad file, a bad row under
    "error", no row of the symbol in any file, no valid row left, or fewer than two bars
    when no file name gives the interval.
    """
    _check_policy(on_bad_rows)
    files = sorted({Path(p) for p in paths}, key=lambda p: (p.name, str(p)))
    chunks: list[RawCandles] = []
    for path in files:
        found = _symbol_rows(path, symbol)
        if found is not None and found[0].num_rows:
            chunks += _candles_from_table(found[0], path, on_bad_rows, found[1])
    if not chunks:
        names = ", ".join(p.name for p in files) or "no files"
        raise DataError(f"symbol {symbol}: no rows of it in {names}")
    return merge_chunks(chunks, on_bad_rows)


def read_raw_dir(
    raw_dir: Path, on_bad_rows: BadRowPolicy = "error"
) -> tuple[dict[str, SymbolCandles], list[Path]]:
    """All candles in `raw_dir`: symbol -> its `SymbolCandles` (sorted by symbol), and
    the files that hold no rows. Built on `symbols_in_file` and `read_symbol`."""
    _check_policy(on_bad_rows)
    raw_dir = Path(raw_dir)
    by_symbol: dict[str, list[Path]] = {}
    empty: list[Path] = []
    for path in list_raw_files(raw_dir):
        symbols = symbols_in_file(path)
        if not symbols:
            empty.append(path)
        for symbol in symbols:
            by_symbol.setdefault(symbol, []).append(path)
    if not by_symbol:
        raise DataError(f"the raw files in {raw_dir} hold no candles")
    return {s: read_symbol(by_symbol[s], s, on_bad_rows) for s in sorted(by_symbol)}, empty


__all__ = [
    "BAD_ROW_POLICIES",
    "BINANCE_COLUMNS",
    "CONFLICT_REASON",
    "MIN_BAR_MS",
    "OUT_OF_ORDER_REASON",
    "RAW_SUFFIXES",
    "BadRow",
    "BadRowPolicy",
    "RawCandles",
    "SymbolCandles",
    "bar_grid_ms",
    "interval_from_filename",
    "iso_ms",
    "list_raw_files",
    "merge_chunks",
    "read_raw_dir",
    "read_raw_file",
    "read_symbol",
    "read_table",
    "symbol_from_filename",
    "symbols_in_file",
    "table_to_candles",
    "validate_candles",
]
