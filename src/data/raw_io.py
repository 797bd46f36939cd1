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

Symbols. A ``symbol`` column names each row's symbol as it is written. Without one, the
symbol is the file's stem before its *interval token*, upper-cased, separators kept; an
interval token is a ``-`` or ``_`` separated token like Binance's intervals (``1s``,
``1m``, ``15m``, ``4h``, ``1d``, ``1w``, and months ``1M`` / ``1mo``):
``BTCUSDT-1m-2024-01.zip`` -> ``BTCUSDT``, ``BTCUSD_PERP-1m-2024-01.zip`` ->
``BTCUSD_PERP``, ``BTCUSD_240329-1m-2024-02.zip`` -> ``BTCUSD_240329``. Without an
interval token it is the stem before the first date (a ``YYYY`` token followed by a
month token: ``synth_2024-01.parquet`` -> ``SYNTH``), else the whole stem (``SOL.csv``
-> ``SOL``). A name is never cut inside the symbol, so different contracts stay apart.

Bar interval. A file's bars lie on a grid: the greatest common divisor of the steps
between its timestamps (`bar_grid_ms`), which missing bars do not change. When the file
name has an interval token and the grid is a whole multiple of it, the named interval is
the bar interval (a ``1m`` file with every other minute missing still has 1-minute
bars). Rejected: a grid that is not a whole multiple of the named interval, a grid
below one second (timestamps that are not bar open times), files of one symbol with
different intervals, or offset against each other on the interval's grid.

Bad rows. A row breaks the value contract with a null, NaN or infinite value, a price
<= 0, a negative volume, taker-buy volume above the volume, high < low, or open or close
outside [low, high]. A row is out of order when its timestamp is below the latest
timestamp of the earlier valid rows of its file and symbol. The caller chooses what
happens to such rows with ``on_bad_rows``:

* ``"error"`` (the default): a `DataError` for the first one, naming file, column, row;
* ``"drop"``: they are left out and reported as `BadRow` records (file, row, reason).

Duplicates. A symbol's rows from all its files are put in time order (stable: files by
name, then rows), so its files may overlap. Rows at one timestamp that are identical in
every contract value are collapsed into one under both policies, and counted. Rows at
one timestamp that differ conflict: ``"error"`` raises naming the file(s), rows and
timestamp; ``"drop"`` leaves out every row at that timestamp (reason
``"conflicting duplicate timestamp"``).

Always a `DataError` naming the file: a missing or mistyped column, an empty ``symbol``
(the row belongs to no symbol), a negative timestamp or mixed time units, an interval
problem above, a symbol with ``taker_buy_volume`` in some files only, a file that cannot
be parsed (corrupt Parquet, CSV or zip), and a symbol left with no valid row or, when
the interval is unknown, fewer than two bars.

One symbol at a time: `symbols_in_file` reads only the ``symbol`` column and
`read_symbol` only one symbol's rows (Parquet row group by row group, CSV block by
block). The results are deterministic: the same files give the same arrays and the
same `BadRow` order (by file name, then row).
"""

from __future__ import annotations

import re
import zipfile
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

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

BadRowPolicy = Literal["error", "drop"]
#: The values `on_bad_rows` takes (module docstring).
BAD_ROW_POLICIES: tuple[str, ...] = ("error", "drop")
#: `BadRow.reason` of the rows at a timestamp whose rows differ.
CONFLICT_REASON = "conflicting duplicate timestamp"
#: `BadRow.reason` of a row earlier than an earlier row of its file.
OUT_OF_ORDER_REASON = "'timestamp' is earlier than an earlier row"
#: Bar grids below this many milliseconds are not bars.
MIN_BAR_MS = 1000

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

# File-name tokens: Binance intervals (m = minutes, M / mo = months), years, months.
_INTERVAL_TOKEN = re.compile(r"([1-9]\d*)(s|m|h|d|w|mo|M)")
_UNIT_MS = {"s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000}
_YEAR_TOKEN = re.compile(r"\d{4}")
_MONTH_TOKEN = re.compile(r"0[1-9]|1[0-2]")
# Units for durations in messages, largest first.
_DURATIONS = (
    (604_800_000, "week"),
    (86_400_000, "day"),
    (3_600_000, "hour"),
    (60_000, "minute"),
    (1000, "second"),
)


@dataclass(frozen=True)
class BadRow:
    """A row left out under ``on_bad_rows="drop"``."""

    file: str
    """File name."""
    row: int
    """Row in that file (0 = first data row)."""
    symbol: str
    timestamp_ms: int | None
    """Epoch milliseconds, UTC; None when the timestamp itself is empty."""
    reason: str
    """What is wrong, e.g. ``'high' is below 'low'``."""


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
    """Bar interval in milliseconds (module docstring, "Bar interval"); None when a file
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


def iso_ms(ms: int) -> str:
    """Epoch milliseconds as an ISO-8601 UTC string (`2024-01-01T00:00:00+00:00`)."""
    try:
        return datetime.fromtimestamp(int(ms) / 1000.0, tz=UTC).isoformat()
    except (OverflowError, OSError, ValueError):  # beyond year 9999: still say something
        return f"{int(ms)} ms since 1970"


def _check_policy(on_bad_rows: str) -> None:
    if on_bad_rows not in BAD_ROW_POLICIES:
        raise ValueError(f"on_bad_rows must be one of {BAD_ROW_POLICIES}, got {on_bad_rows!r}")


# ------------------------------------------------------------------------ file names


def _stem(path: Path) -> str:
    """The file name without its raw-file suffixes (`X-1m.csv.zip` -> `X-1m`)."""
    stem = Path(path).name
    while (suffix := Path(stem).suffix) and suffix.lower() in RAW_SUFFIXES:
        stem = stem[: -len(suffix)]
    return stem


def _name_parts(path: Path) -> tuple[str, str | None]:
    """(the symbol part of the stem as written, the interval token or None)."""
    stem = _stem(path)
    parts = re.split(r"([-_])", stem)  # tokens at even positions, separators between
    tokens = parts[0::2]

    def before(k: int) -> str:
        return "".join(parts[: 2 * k - 1])

    for k in range(1, len(tokens)):
        if _INTERVAL_TOKEN.fullmatch(tokens[k]) and before(k).strip("-_"):
            return before(k), tokens[k]
    for k in range(1, len(tokens) - 1):
        if (
            _YEAR_TOKEN.fullmatch(tokens[k])
            and _MONTH_TOKEN.fullmatch(tokens[k + 1])
            and before(k).strip("-_")
        ):
            return before(k), None
    return stem, None


def symbol_from_filename(path: Path) -> str:
    """The symbol a file name gives (module docstring, "Symbols"), upper-cased.

    `BTCUSDT-1m-2024-01.zip` -> `BTCUSDT`, `BTCUSD_PERP-1m-2024-01.zip` -> `BTCUSD_PERP`,
    `synth_2024-01.parquet` -> `SYNTH`, `SOL.csv` -> `SOL`.
    """
    return _name_parts(path)[0].upper()


def interval_from_filename(path: Path) -> int | None:
    """The bar interval a file name names, in milliseconds (`X-15m-2024-01.zip` ->
    900000); None without an interval token, or for months (`1M`, `1mo`), which have
    no fixed length."""
    token = _name_parts(path)[1]
    if token is None:
        return None
    match = _INTERVAL_TOKEN.fullmatch(token)
    assert match is not None
    unit = _UNIT_MS.get(match.group(2))
    return None if unit is None else int(match.group(1)) * unit


def _duration(ms: int) -> str:
    """`300000` -> `5 minutes`; `7` -> `7 ms`."""
    for size, name in _DURATIONS:
        if ms % size == 0:
            n = ms // size
            return f"{n} {name}{'' if n == 1 else 's'}"
    return f"{ms} ms"


def _interval_adjective(ms: int) -> str:
    """`300000` -> `5-minute`; `7` -> `7-ms`."""
    for size, name in _DURATIONS:
        if ms % size == 0:
            return f"{ms // size}-{name}"
    return f"{ms}-ms"


# ---------------------------------------------------------------------- the bar grid


def bar_grid_ms(timestamp_ms: np.ndarray) -> int | None:
    """The grid the timestamps lie on: the greatest common divisor of the positive steps
    between them, in milliseconds (any order; repeats are ignored).

    Missing bars do not change it (unlike a median step). None for fewer than two
    distinct timestamps.
    """
    ts = np.asarray(timestamp_ms, dtype=np.int64)
    steps = np.abs(np.diff(ts))  # gcd of these = gcd of all pairwise differences
    steps = steps[steps != 0]
    if steps.size == 0:
        return None
    return int(np.gcd.reduce(steps))


def _file_bar_ms(ts: np.ndarray, path: Path, symbol: str) -> int | None:
    """A file's bar interval for one symbol: its grid, or the interval its name gives
    when the grid is a whole multiple of that."""
    grid = bar_grid_ms(ts)
    named = interval_from_filename(path)
    if grid is not None and grid < MIN_BAR_MS:
        raise DataError(
            f"{path}: timestamps are not on a regular bar grid (steps have a greatest "
            f"common divisor of {grid} ms, symbol {symbol}); use bar open times"
        )
    if grid is None or named is None:
        return named if grid is None else grid
    if grid % named:
        raise DataError(
            f"{path}: the file name says {_name_parts(path)[1]} bars ({_duration(named)}) "
            f"but the timestamps of symbol {symbol} step by multiples of {_duration(grid)} "
            "(their greatest common divisor), which is not a whole multiple of it; rename "
            "the file or fix its timestamps"
        )
    return named


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


def _parquet_error(path: Path, err: Exception) -> DataError:
    return DataError(f"{path}: not a readable Parquet file ({_one_line(err)})")


def _read_parquet(path: Path) -> pa.Table:
    try:
        schema = pq.read_schema(path)
        _require_columns(path, schema.names)
        return pq.read_table(path, columns=_contract_columns(schema.names))
    except (pa.ArrowException, OSError) as err:
        raise _parquet_error(path, err) from None


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


def _csv_bytes(path: Path) -> bytes:
    """The CSV text of a `.csv` or `.zip` file."""
    if path.suffix.lower() == ".zip":
        return _zip_csv_bytes(path)
    try:
        return path.read_bytes()
    except OSError as err:
        raise DataError(f"{path}: cannot read ({_one_line(err)})") from None


def _csv_head(path: Path) -> tuple[str, bytes | None]:
    """The first line of a `.csv` / `.zip` and, for a zip, its CSV bytes (which are in
    memory anyway); a `.csv` is only read as far as its first line."""
    if path.suffix.lower() == ".zip":
        data = _zip_csv_bytes(path)
        return _first_line(data), data
    try:
        with path.open("rb") as f:
            return _first_line(f.read(4096)), None
    except OSError as err:
        raise DataError(f"{path}: cannot read ({_one_line(err)})") from None


def _first_line(data: bytes) -> str:
    head = data[:4096].decode("utf-8-sig", errors="replace")
    return head.splitlines()[0] if head.strip() else ""


def _looks_like_number(text: str) -> bool:
    try:
        float(text.strip().strip('"'))
    except ValueError:
        return False
    return True


def _is_binance(header: str) -> bool:
    """A first line that starts with a number is data: Binance's headerless layout."""
    return _looks_like_number(header.split(",")[0])


def _binance_options() -> tuple[pacsv.ReadOptions, pacsv.ConvertOptions]:
    """Options for a headerless Binance kline CSV."""
    return (
        pacsv.ReadOptions(column_names=list(BINANCE_COLUMNS)),
        pacsv.ConvertOptions(
            include_columns=["open_time", *NUMBER_COLUMNS],
            column_types={"open_time": pa.int64(), **dict.fromkeys(NUMBER_COLUMNS, pa.float64())},
        ),
    )


def _headed_names(header: str, path: Path) -> list[str]:
    """The column names of a CSV's header row, lower-cased (open_time stands in for
    timestamp); the contract's columns must be among them."""
    names = [n.strip().strip('"').lower() for n in header.split(",")]
    if C.TIMESTAMP_COL not in names and "open_time" in names:
        names[names.index("open_time")] = C.TIMESTAMP_COL
    _require_columns(path, names)
    return names


def _headed_options(
    names: list[str], include: list[str] | None = None
) -> tuple[pacsv.ReadOptions, pacsv.ConvertOptions]:
    """Options for a CSV whose first row names the columns, reading `include` (default:
    the contract's columns)."""
    include = _contract_columns(names) if include is None else include
    types = {n: pa.float64() for n in NUMBER_COLUMNS if n in include}
    if C.SYMBOL_COL in include:
        types[C.SYMBOL_COL] = pa.string()
    # The timestamp's type is inferred: integers stay int64, ISO text becomes a timestamp.
    return (
        pacsv.ReadOptions(column_names=names, skip_rows=1),
        pacsv.ConvertOptions(include_columns=include, column_types=types),
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


def _csv_error(path: Path, data: bytes, read: pacsv.ReadOptions, err: Exception) -> DataError:
    detail = _bad_value(data, read, err) or _one_line(err)
    return DataError(f"{path}: cannot parse CSV ({detail})")


def _read_csv_bytes(data: bytes, path: Path) -> pa.Table:
    """Parse a Binance (headerless) or headed CSV into contract column names."""
    header = _first_line(data)
    if not header:
        return pa.table({})
    binance = _is_binance(header)
    read, convert = _binance_options() if binance else _headed_options(_headed_names(header, path))
    try:
        table = pacsv.read_csv(pa.BufferReader(data), read_options=read, convert_options=convert)
    except pa.ArrowException as err:
        raise _csv_error(path, data, read, err) from None
    if binance:
        table = table.rename_columns([C.TIMESTAMP_COL, *table.column_names[1:]])
    return table


def _csv_batches(
    path: Path, data: bytes | None, read: pacsv.ReadOptions, convert: pacsv.ConvertOptions
) -> Iterator[pa.RecordBatch]:
    """Stream a CSV block by block (`data`: its bytes when already in memory)."""
    source = pa.BufferReader(data) if data is not None else str(path)
    try:
        yield from pacsv.open_csv(source, read_options=read, convert_options=convert)
    except pa.ArrowException as err:
        raise _csv_error(path, data if data is not None else _csv_bytes(path), read, err) from None
    except OSError as err:
        raise DataError(f"{path}: cannot read ({_one_line(err)})") from None


def read_table(path: Path) -> pa.Table:
    """Read one raw file into an Arrow table with contract column names (types unchecked)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        return _read_parquet(path)
    if suffix in (".zip", ".csv"):
        return _read_csv_bytes(_csv_bytes(path), path)
    raise DataError(f"{path}: unsupported file type; use {', '.join(RAW_SUFFIXES)}")


def _unsupported(path: Path) -> DataError:
    return DataError(f"{path}: unsupported file type; use {', '.join(RAW_SUFFIXES)}")


# ---------------------------------------------------------- one symbol of one file


def _symbol_strings(table: pa.Table, path: Path, first_row: int) -> pa.ChunkedArray:
    """The symbol column of `table` (whose first row is row `first_row` of the file),
    checked: strings, none empty."""
    column = _symbol_column(table, path)
    assert column is not None
    if column.null_count:
        raise _empty_symbol(path, first_row + _first_null_row(column))
    return column


def symbols_in_file(path: Path) -> list[str]:
    """The symbols one raw file holds, sorted: the distinct values of its ``symbol``
    column (reading only that column), else ``[symbol_from_filename(path)]``; ``[]``
    for a file without rows.

    Raises `DataError` for an unreadable file, a missing contract column, or an empty or
    non-string ``symbol``.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    found: set[str] = set()
    if suffix == ".parquet":
        try:
            with pq.ParquetFile(path) as pf:
                names = pf.schema_arrow.names
                _require_columns(path, names)
                if pf.metadata.num_rows == 0:
                    return []
                if C.SYMBOL_COL not in names:
                    return [symbol_from_filename(path)]
                offset = 0
                for i in range(pf.num_row_groups):
                    part = pf.read_row_group(i, columns=[C.SYMBOL_COL])
                    found.update(pc.unique(_symbol_strings(part, path, offset)).to_pylist())
                    offset += part.num_rows
        except (pa.ArrowException, OSError) as err:
            raise _parquet_error(path, err) from None
        return sorted(found)
    if suffix not in (".csv", ".zip"):
        raise _unsupported(path)
    header, data = _csv_head(path)
    if not header:
        return []
    if _is_binance(header):  # the first line is a row
        return [symbol_from_filename(path)]
    names = _headed_names(header, path)
    has_symbol = C.SYMBOL_COL in names
    column = C.SYMBOL_COL if has_symbol else C.TIMESTAMP_COL
    read = pacsv.ReadOptions(column_names=names, skip_rows=1)
    convert = pacsv.ConvertOptions(include_columns=[column], column_types={column: pa.string()})
    rows = 0
    for batch in _csv_batches(path, data, read, convert):
        rows += batch.num_rows
        if has_symbol:
            found.update(pc.unique(batch.column(0)).to_pylist())
        elif rows:
            break
    if has_symbol:
        return sorted(found)
    return [symbol_from_filename(path)] if rows else []


def _symbol_rows(path: Path, symbol: str) -> tuple[pa.Table, np.ndarray] | None:
    """The rows of `symbol` in one file and their row numbers in the file; None when it
    holds none. Reads a Parquet file row group by row group and a headed CSV with a
    symbol column block by block, keeping only the symbol's rows."""
    suffix = path.suffix.lower()
    tables: list[pa.Table] = []
    rows: list[np.ndarray] = []

    def mask_of(part: pa.Table, offset: int) -> np.ndarray:
        symbols = _symbol_strings(part, path, offset)
        return pc.equal(symbols, symbol).to_numpy(zero_copy_only=False)

    def keep(part: pa.Table, mask: np.ndarray, offset: int) -> None:
        tables.append(part.filter(pa.array(mask)))
        rows.append(offset + np.flatnonzero(mask))

    if suffix == ".parquet":
        try:
            with pq.ParquetFile(path) as pf:
                names = pf.schema_arrow.names
                _require_columns(path, names)
                columns = _contract_columns(names)
                if C.SYMBOL_COL not in names:
                    if pf.metadata.num_rows == 0 or symbol_from_filename(path) != symbol:
                        return None
                    table = pf.read(columns=columns)
                    return table, np.arange(table.num_rows, dtype=np.int64)
                offset = 0
                for i in range(pf.num_row_groups):
                    symbols = pf.read_row_group(i, columns=[C.SYMBOL_COL])
                    mask = mask_of(symbols, offset)
                    if mask.any():  # read the other columns only where the symbol is
                        keep(pf.read_row_group(i, columns=columns), mask, offset)
                    offset += symbols.num_rows
        except (pa.ArrowException, OSError) as err:
            raise _parquet_error(path, err) from None
    elif suffix in (".csv", ".zip"):
        header, data = _csv_head(path)
        if not header:
            return None
        if _is_binance(header) or C.SYMBOL_COL not in _headed_names(header, path):
            if symbol_from_filename(path) != symbol:
                return None
            table = _read_csv_bytes(data if data is not None else _csv_bytes(path), path)
            return table, np.arange(table.num_rows, dtype=np.int64)
        read, convert = _headed_options(_headed_names(header, path))
        offset = 0
        for batch in _csv_batches(path, data, read, convert):
            part = pa.Table.from_batches([batch])
            mask = mask_of(part, offset)
            if mask.any():
                keep(part, mask, offset)
            offset += batch.num_rows
    else:
        raise _unsupported(path)
    if not tables:
        return None
    return pa.concat_tables(tables), np.concatenate(rows)


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


# ------------------------------------------------------------------ rows of a chunk


def _value_checks(
    open_: np.ndarray,
    high: np.ndarray,
    low: np.ndarray,
    close: np.ndarray,
    volume: np.ndarray,
    taker: np.ndarray | None,
) -> Iterator[tuple[np.ndarray, str]]:
    """(rows that break it, what is wrong) for each value rule, in reporting order;
    computed one at a time, so an error stops at the first."""
    numbers = {"open": open_, "high": high, "low": low, "close": close, "volume": volume}
    if taker is not None:
        numbers[TAKER_COL] = taker
    for name, x in numbers.items():
        yield np.isnan(x), f"column '{name}' is NaN"
        yield np.isinf(x), f"column '{name}' is infinite"
    for name in PRICE_COLUMNS:
        yield numbers[name] <= 0, f"column '{name}' is <= 0"
    yield volume < 0, "column 'volume' is negative"
    if taker is not None:
        yield taker < 0, "column 'taker_buy_volume' is negative"
        yield taker > volume * (1 + _CONTAIN_TOL), "column 'taker_buy_volume' is above 'volume'"
    yield high < low, "'high' is below 'low'"
    yield np.maximum(open_, close) > high * (1 + _CONTAIN_TOL), "open/close is above 'high'"
    yield np.minimum(open_, close) < low * (1 - _CONTAIN_TOL), "open/close is below 'low'"


class _Triage:
    """The bad rows of one chunk: under "error" raises for the first row a rule finds;
    under "drop" records each row's first reason (`code` indexes `reasons`; -1: good)."""

    def __init__(
        self,
        policy: str,
        path: Path,
        symbol: str,
        ts: np.ndarray,
        rows: np.ndarray,
        code: np.ndarray,
        reasons: list[str],
    ) -> None:
        self.policy, self.path, self.symbol = policy, path, symbol
        self.ts, self.rows, self.code, self.reasons = ts, rows, code, reasons

    def reject(self, bad: np.ndarray, what: str) -> None:
        if not bad.any():
            return
        if self.policy == "error":
            i = int(np.argmax(bad))
            raise DataError(
                f"{self.path}: {what} at row {int(self.rows[i])} ({iso_ms(self.ts[i])}, "
                f"symbol {self.symbol}); fix or drop that row"
            )
        new = bad & (self.code < 0)
        if new.any():
            self.code[new] = len(self.reasons)
            self.reasons.append(what)

    def reject_at(self, index: np.ndarray, what: str) -> None:
        """Reject the rows at positions `index` (under "drop" only)."""
        bad = np.zeros(self.code.shape[0], dtype=bool)
        bad[index] = True
        self.reject(bad, what)


def _late(ts: np.ndarray) -> np.ndarray:
    """Rows whose timestamp is below the maximum of the rows before them."""
    late = np.zeros(ts.shape[0], dtype=bool)
    if ts.shape[0] > 1:
        late[1:] = ts[1:] < np.maximum.accumulate(ts)[:-1]
    return late


@dataclass(frozen=True)
class _Duplicates:
    """Rows at a timestamp of an earlier row (timestamps in non-decreasing order)."""

    first: np.ndarray
    """Position of the first row at each row's timestamp."""
    differs: np.ndarray
    """The row differs from the first row at its timestamp in some value."""
    conflict: np.ndarray
    """The row's timestamp has rows that differ."""
    extra: np.ndarray
    """The row repeats the first row at its timestamp exactly (to collapse)."""


def _duplicates(ts: np.ndarray, values: list[np.ndarray]) -> _Duplicates:
    n = ts.shape[0]
    starts = np.ones(n, dtype=bool)
    starts[1:] = ts[1:] != ts[:-1]
    if starts.all():  # the common case: no duplicates
        none = np.zeros(n, dtype=bool)
        return _Duplicates(np.arange(n), none, none, none)
    group = np.cumsum(starts) - 1
    first = np.flatnonzero(starts)[group]
    differs = np.zeros(n, dtype=bool)
    for x in values:
        differs |= x != x[first]
    conflict = (np.bincount(group, weights=differs) > 0)[group]
    return _Duplicates(first, differs, conflict, ~starts & ~conflict)


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


def _raise_order(
    path: Path,
    symbol: str,
    ts: np.ndarray,
    rows: np.ndarray,
    values: list[np.ndarray],
    late: np.ndarray,
) -> None:
    """Under "error" (all rows valid): raise for the first row that is out of order or
    conflicts with an earlier row at its timestamp, whichever comes first."""
    end = int(np.argmax(late)) if late.any() else ts.shape[0]
    dup = _duplicates(ts[:end], [x[:end] for x in values])  # sorted up to `end`
    if dup.differs.any():
        i = int(np.argmax(dup.differs))
        raise DataError(
            f"{path}: column 'timestamp' at row {int(rows[i])} ({iso_ms(ts[i])}, symbol "
            f"{symbol}) duplicates row {int(rows[dup.first[i]])} with different values; "
            "keep one of them"
        )
    if late.any():
        raise DataError(
            f"{path}: column 'timestamp' at row {int(rows[end])} ({iso_ms(ts[end])}, "
            f"symbol {symbol}) is earlier than the previous row ({iso_ms(ts[end - 1])}); "
            "sort by time and drop duplicates"
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
