"""Listing and parsing raw candle files (docs/design.md, "Data contract"); part of
reading raw candles (`raw_io`).

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

A file that cannot be parsed (corrupt Parquet, CSV or zip) is a `DataError` naming it.
Types and values are checked afterwards (`raw_columns`, `raw_checks`).

One symbol at a time: `symbols_in_file` reads only the ``symbol`` column and
`_symbol_rows` only one symbol's rows (Parquet row group by row group, CSV block by
block).
"""

from __future__ import annotations

import re
import zipfile
import zlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from src.core import constants as C
from src.core.errors import DataError
from src.data.raw_columns import (
    NUMBER_COLUMNS,
    _contract_columns,
    _empty_symbol,
    _first_null_row,
    _require_columns,
    _symbol_column,
)
from src.data.raw_names import RAW_SUFFIXES, symbol_from_filename

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


__all__ = ["BINANCE_COLUMNS", "list_raw_files", "read_table", "symbols_in_file"]
