"""Reading raw candles: Parquet, Binance CSV (plain, zip, microseconds), headed CSV,
and one clear DataError per contract violation."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from src.core.errors import DataError
from src.data.raw_io import (
    RawCandles,
    interval_from_filename,
    list_raw_files,
    merge_chunks,
    read_raw_dir,
    read_raw_file,
    symbol_from_filename,
)
from src.data.synthetic import generate_candles

FIELDS = ("open", "high", "low", "close", "volume", "taker_buy_volume")


def candles_table(n: int = 200, seed: int = 0, bar_minutes: int = 1) -> pa.Table:
    """Synthetic candles without a symbol column (the symbol comes from the file name)."""
    table = generate_candles(n, seed=seed, bar_minutes=bar_minutes)
    return table.drop_columns(["symbol"])


def binance_lines(table: pa.Table, time_scale: int = 1) -> list[str]:
    """Rows in Binance's kline CSV layout; floats written with repr (exact round trip)."""
    ts = table.column("timestamp").cast(pa.int64()).to_numpy() * time_scale
    cols = {name: table.column(name).to_pylist() for name in FIELDS}
    lines = []
    for i, t in enumerate(ts):
        o, h, lo, c, v, tb = (repr(cols[name][i]) for name in FIELDS)
        close_time = t + 60_000 * time_scale - 1
        lines.append(f"{t},{o},{h},{lo},{c},{v},{close_time},1.5,42,{tb},0.7,0")
    return lines


def write_binance_csv(
    table: pa.Table, path: Path, *, time_scale: int = 1, header: bool = False
) -> Path:
    """Write `table` as a Binance kline CSV; a `.zip` path gets a zip holding the CSV."""
    lines = binance_lines(table, time_scale)
    if header:
        lines.insert(
            0,
            "open_time,open,high,low,close,volume,close_time,quote_volume,count,"
            "taker_buy_volume,taker_buy_quote_volume,ignore",
        )
    text = "\n".join(lines) + "\n"
    if path.suffix == ".zip":
        with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
            zf.writestr(path.with_suffix(".csv").name, text)
    else:
        path.write_text(text)
    return path


def only(chunks: list[RawCandles]) -> RawCandles:
    assert len(chunks) == 1
    return chunks[0]


def assert_same_candles(a: RawCandles, b: RawCandles) -> None:
    assert a.symbol == b.symbol
    np.testing.assert_array_equal(a.timestamp, b.timestamp)
    for name in FIELDS:
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)


@pytest.fixture
def table() -> pa.Table:
    return candles_table()


@pytest.fixture
def reference(tmp_path: Path, table: pa.Table) -> RawCandles:
    path = tmp_path / "ref" / "BTCUSDT-1m-2024-01.parquet"
    path.parent.mkdir()
    pq.write_table(table, path)
    return only(read_raw_file(path))


# ------------------------------------------------------------------ accepted input


@pytest.mark.parametrize(
    ("name", "symbol", "interval_ms"),
    [
        ("BTCUSDT-1m-2024-01.zip", "BTCUSDT", 60_000),
        ("BTCUSD_PERP-1m-2024-01.zip", "BTCUSD_PERP", 60_000),  # COIN-M perpetual
        ("BTCUSD_240329-1m-2024-02.zip", "BTCUSD_240329", 60_000),  # COIN-M quarterly
        ("ETHUSDT-5m-2024-01-03.zip", "ETHUSDT", 300_000),  # a daily file
        ("ETHUSDT-4h-2024-01.csv", "ETHUSDT", 4 * 3_600_000),
        ("ETHUSDT-1s-2024-01-03.zip", "ETHUSDT", 1000),
        ("ETHUSDT-1M-2024.zip", "ETHUSDT", None),  # months: no fixed length
        ("ethusdt-1mo-2024.zip", "ETHUSDT", None),
        ("synth_2024-01.parquet", "SYNTH", None),
        ("ethusdt_2024-01.parquet", "ETHUSDT", None),
        ("BTCUSD_PERP_2024-01.parquet", "BTCUSD_PERP", None),
        ("SOL.csv", "SOL", None),
        ("BTCUSDT_export.csv", "BTCUSDT_EXPORT", None),  # never spliced
        ("BRK.B_2024-01.csv", "BRK.B", None),
        ("1000SHIBUSDT-1m-2024-01.zip", "1000SHIBUSDT", 60_000),
    ],
)
def test_symbol_and_interval_from_filename(name, symbol, interval_ms):
    assert symbol_from_filename(Path(name)) == symbol
    assert interval_from_filename(Path(name)) == interval_ms


def test_parquet_int64_ms_equals_timestamp_type(tmp_path, table, reference):
    ms = table.set_column(0, "timestamp", table.column("timestamp").cast(pa.int64()))
    pq.write_table(ms, tmp_path / "BTCUSDT-1m-2024-01.parquet")
    c = only(read_raw_file(tmp_path / "BTCUSDT-1m-2024-01.parquet"))
    assert_same_candles(c, reference)
    assert c.timestamp.dtype == np.int64
    assert c.timestamp[0] == np.datetime64("2024-01-01", "ms").astype(np.int64)


def test_parquet_other_units_and_symbol_column(tmp_path, table, reference):
    us = table.set_column(0, "timestamp", table.column("timestamp").cast(pa.timestamp("us")))
    us = us.append_column("symbol", pa.array(["btcusdt-perp"] * us.num_rows))
    pq.write_table(us, tmp_path / "whatever.parquet")
    c = only(read_raw_file(tmp_path / "whatever.parquet"))
    assert c.symbol == "btcusdt-perp"  # a symbol column is taken as it is
    np.testing.assert_array_equal(c.timestamp, reference.timestamp)


@pytest.mark.parametrize(
    ("name", "time_scale", "header"),
    [
        ("BTCUSDT-1m-2024-01.csv", 1, False),
        ("BTCUSDT-1m-2024-01.zip", 1, False),
        ("BTCUSDT-1m-2024-01.zip", 1000, False),  # newer files: microseconds
        ("BTCUSDT-1m-2024-01.csv", 1, True),  # futures files carry a header
    ],
)
def test_binance_csv_equals_parquet(tmp_path, table, reference, name, time_scale, header):
    path = write_binance_csv(table, tmp_path / name, time_scale=time_scale, header=header)
    assert_same_candles(only(read_raw_file(path)), reference)


def test_headed_csv_with_iso_times_and_extra_columns(tmp_path, table, reference):
    ts = table.column("timestamp").cast(pa.int64()).to_numpy()
    iso = np.datetime_as_string(ts.astype("datetime64[ms]"), unit="s")
    cols = {name: table.column(name).to_pylist() for name in FIELDS}
    lines = ["Timestamp,Open,High,Low,Close,Volume,Taker_Buy_Volume,Note"]
    for i in range(len(ts)):
        values = ",".join(repr(cols[name][i]) for name in FIELDS)
        lines.append(f"{iso[i]}Z,{values},x")
    path = tmp_path / "BTCUSDT_2024-01.csv"  # no "_export": the whole stem is the symbol
    path.write_text("\n".join(lines) + "\n")
    assert_same_candles(only(read_raw_file(path)), reference)


def test_headed_csv_without_taker_volume(tmp_path):
    path = tmp_path / "abc.csv"
    path.write_text(
        "timestamp,open,high,low,close,volume,symbol\n"
        "1704067200000,10,11,9,10.5,3,XYZ\n"
        "1704067260000,10.5,11,10,10.8,0,XYZ\n"
    )
    c = only(read_raw_file(path))
    assert c.symbol == "XYZ" and c.taker_buy_volume is None
    assert c.close.tolist() == [10.5, 10.8]


def test_seconds_are_converted(tmp_path):
    path = tmp_path / "abc.csv"
    path.write_text(
        "1704067200,10,11,9,10.5,3,0,0,0,1,0,0\n1704067260,10,11,9,10.5,3,0,0,0,1,0,0\n"
    )
    assert only(read_raw_file(path)).timestamp.tolist() == [1704067200000, 1704067260000]


def test_a_file_with_several_symbols_is_split(tmp_path, table):
    n = table.num_rows
    both = pa.concat_tables([table, table]).append_column(
        "symbol", pa.array(["AAA"] * n + ["BBB"] * n)
    )
    chunks = read_raw_file(_write(tmp_path, both, "mixed.parquet"))
    assert [c.symbol for c in chunks] == ["AAA", "BBB"]
    assert chunks[1].row[0] == n  # rows are numbered as in the file


def test_files_are_joined_in_time_order(tmp_path, table):
    d = tmp_path / "raw"
    d.mkdir()
    pq.write_table(table.slice(100), d / "X-1m-a.parquet")  # later half, listed first
    pq.write_table(table.slice(0, 100), d / "X-1m-b.parquet")
    candles, empty = read_raw_dir(d)
    assert not empty and list(candles) == ["X"]
    x = candles["X"].candles
    assert (np.diff(x.timestamp) > 0).all() and len(x) == table.num_rows
    assert x.source == "X-1m-a.parquet, X-1m-b.parquet"


def test_empty_files_are_reported_not_fatal(tmp_path, table):
    d = tmp_path / "raw"
    d.mkdir()
    pq.write_table(table, d / "X_2024-01.parquet")
    (d / "X_2024-02.csv").write_text("")
    candles, empty = read_raw_dir(d)
    assert list(candles) == ["X"] and [p.name for p in empty] == ["X_2024-02.csv"]


def test_list_raw_files(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        list_raw_files(tmp_path / "nope")
    (tmp_path / "readme.txt").write_text("x")
    with pytest.raises(DataError, match="no raw candle files"):
        list_raw_files(tmp_path)
    (tmp_path / "a.parquet").write_bytes(b"")
    (tmp_path / "b.CSV").write_bytes(b"")
    assert [p.name for p in list_raw_files(tmp_path)] == ["a.parquet", "b.CSV"]


# ------------------------------------------------------------------ rejected input


def _write(tmp_path: Path, table: pa.Table, name: str = "BAD_2024-01.parquet") -> Path:
    path = tmp_path / name
    pq.write_table(table, path)
    return path


def _with(table: pa.Table, column: str, values) -> pa.Table:
    return table.set_column(table.column_names.index(column), column, pa.array(values))


def _edit(table: pa.Table, column: str, row: int, value: float) -> pa.Table:
    values = table.column(column).to_numpy().copy()
    values[row] = value
    return _with(table, column, values)


def _swap_times(table: pa.Table, i: int, j: int) -> pa.Table:
    ts = table.column("timestamp").cast(pa.int64()).to_numpy().copy()
    ts[i], ts[j] = ts[j], ts[i]
    return _with(table, "timestamp", ts)


def _duplicate_time(table: pa.Table, i: int) -> pa.Table:
    ts = table.column("timestamp").cast(pa.int64()).to_numpy().copy()
    ts[i] = ts[i - 1]
    return _with(table, "timestamp", ts)


@pytest.mark.parametrize(
    ("make_bad", "expected"),
    [
        (lambda t: t.drop_columns(["close"]), "missing column 'close'"),
        (lambda t: _with(t, "close", [str(x) for x in t.column("close").to_pylist()]),
         "column 'close' has type string"),
        (lambda t: _with(t, "timestamp", t.column("timestamp").cast(pa.int64()).to_numpy() / 1),
         "column 'timestamp' has type double"),
        (lambda t: _edit(t, "close", 17, np.nan), "column 'close' is NaN at row 17"),
        (lambda t: _edit(t, "volume", 3, np.inf), "column 'volume' is infinite at row 3"),
        (lambda t: _edit(t, "open", 4, -1.0), "column 'open' is <= 0 at row 4"),
        (lambda t: _edit(t, "volume", 6, -1.0), "column 'volume' is negative at row 6"),
        (lambda t: _edit(t, "taker_buy_volume", 8, 1e9), "'taker_buy_volume' is above"),
        (lambda t: _edit(t, "high", 5, 1.0), "'high' is below 'low' at row 5"),
        (lambda t: _edit(t, "open", 9, 1e6), "open/close is above 'high' at row 9"),
        (lambda t: _swap_times(t, 10, 11), "'timestamp' at row 11 .* is earlier than"),
        (lambda t: _duplicate_time(t, 12), "'timestamp' at row 12 .* duplicates"),
        (lambda t: _with(t, "open", [None] + t.column("open").to_pylist()[1:]),
         "column 'open' is empty at row 0"),
    ],
)  # fmt: skip
def test_contract_violations_name_file_column_and_row(tmp_path, table, make_bad, expected):
    path = _write(tmp_path, make_bad(table))
    with pytest.raises(DataError, match=expected) as err:
        read_raw_file(path)
    assert str(path) in str(err.value)
    assert "\n" not in str(err.value)


def test_mixed_time_units(tmp_path):
    path = tmp_path / "x.csv"
    path.write_text(
        "1704067200000,10,11,9,10,1,0,0,0,0,0,0\n1704067260000000,10,11,9,10,1,0,0,0,0,0,0\n"
    )
    with pytest.raises(DataError, match="mixes time units"):
        read_raw_file(path)


@pytest.mark.parametrize(
    ("name", "content", "expected"),
    [
        ("x.parquet", b"PAR1 this is not parquet", "not a readable Parquet file"),
        ("x.zip", b"PK\x03\x04 broken", "not a readable zip file"),
        (
            "x.csv",
            b"1704067200000,10,11,9,10,1,0,0,0,0,0,0\n1704067260000,10,11,9,abc,1,0,0,0,0,0,0\n",
            "column 'close' has a value that is not a number at row 1: 'abc'",
        ),
        ("x.csv", b"1704067200000,10,11\n", "cannot parse CSV"),
    ],
)
def test_corrupt_files(tmp_path, name, content, expected):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(DataError, match=expected) as err:
        read_raw_file(path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_truncated_parquet(tmp_path, table):
    path = _write(tmp_path, table)
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(DataError, match="not a readable Parquet file"):
        read_raw_file(path)


def test_zip_must_hold_one_csv(tmp_path):
    path = tmp_path / "x.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("a.csv", "1,2")
        zf.writestr("b.csv", "1,2")
    with pytest.raises(DataError, match="exactly one .csv file, found 2"):
        read_raw_file(path)


def test_overlapping_files_of_a_symbol(tmp_path, table):
    """Identical overlap collapses into one row per timestamp; conflicting overlap errs."""
    a = only(read_raw_file(_write(tmp_path, table.slice(0, 120), "X_2024-01.parquet")))
    b = only(read_raw_file(_write(tmp_path, table.slice(100), "X_2024-02.parquet")))
    merged = merge_chunks([b, a])
    np.testing.assert_array_equal(
        merged.candles.timestamp, table.column("timestamp").cast(pa.int64()).to_numpy()
    )
    assert merged.duplicates == 20 and merged.bad_rows == [] and merged.bar_ms == 60_000
    # The kept copy of each overlapping row is the one of the first file by name.
    assert merged.candles.row[100:120].tolist() == list(range(100, 120))

    changed = _edit(table.slice(100), "close", 5, float(table.column("low")[105].as_py()))
    c = only(read_raw_file(_write(tmp_path, changed, "X_2024-03.parquet")))
    with pytest.raises(DataError) as err:
        merge_chunks([c, a])
    assert (
        "symbol X: X_2024-01.parquet row 105 and X_2024-03.parquet row 5 have the same "
        "timestamp (2024-01-01T01:45:00+00:00) but different values" in str(err.value)
    )


def test_taker_volume_in_some_files_only(tmp_path, table):
    a = only(read_raw_file(_write(tmp_path, table.slice(0, 100), "X_2024-01.parquet")))
    rest = table.slice(100).drop_columns(["taker_buy_volume"])
    b = only(read_raw_file(_write(tmp_path, rest, "X_2024-02.parquet")))
    with pytest.raises(DataError, match="X_2024-02.parquet has no 'taker_buy_volume'"):
        merge_chunks([a, b])
