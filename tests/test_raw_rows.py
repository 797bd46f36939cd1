"""Real markets in raw_io: symbols from file names, the bar grid, mixed intervals, bad
rows under both policies, duplicates, and reading one symbol at a time."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from src.core.errors import DataError
from src.data.raw_io import (
    CONFLICT_REASON,
    OUT_OF_ORDER_REASON,
    BadRow,
    SymbolCandles,
    bar_grid_ms,
    read_raw_dir,
    read_raw_file,
    read_symbol,
    symbols_in_file,
)
from tests.test_raw_io import FIELDS, _edit, _with, candles_table, write_binance_csv

MINUTE = 60_000
T0 = 1_704_067_200_000  # 2024-01-01T00:00:00Z


def ms(table: pa.Table) -> np.ndarray:
    return table.column("timestamp").cast(pa.int64()).to_numpy()


def with_times(table: pa.Table, ts: np.ndarray) -> pa.Table:
    return _with(table, "timestamp", np.asarray(ts, dtype=np.int64))


def louder(table: pa.Table, row: int) -> pa.Table:
    """`table` with twice the volume at `row` (still a valid row, now a different one)."""
    return _edit(table, "volume", row, 2 * float(table.column("volume")[row].as_py()))


def take(table: pa.Table, rows) -> pa.Table:
    return table.take(pa.array(np.asarray(rows, dtype=np.int64)))


def raw_dir(tmp_path: Path, files: dict[str, pa.Table]) -> Path:
    d = tmp_path / "raw"
    d.mkdir(parents=True, exist_ok=True)
    for name, table in files.items():
        if name.endswith(".parquet"):
            pq.write_table(table, d / name)
        else:
            write_binance_csv(table, d / name)
    return d


def one_line(err: pytest.ExceptionInfo) -> str:
    message = str(err.value)
    assert "\n" not in message
    return message


@pytest.fixture
def table() -> pa.Table:
    return candles_table(300)


# ------------------------------------------------------------------- symbols, grid


def test_coin_m_contracts_are_two_symbols(tmp_path, table):
    d = raw_dir(
        tmp_path,
        {
            "BTCUSD_PERP-1m-2024-01.zip": table,
            "BTCUSD_240329-1m-2024-02.zip": candles_table(300, seed=1),
        },
    )
    assert symbols_in_file(d / "BTCUSD_PERP-1m-2024-01.zip") == ["BTCUSD_PERP"]
    candles, empty = read_raw_dir(d)
    assert list(candles) == ["BTCUSD_240329", "BTCUSD_PERP"] and not empty
    perp = candles["BTCUSD_PERP"]
    assert isinstance(perp, SymbolCandles) and perp.symbol == "BTCUSD_PERP"
    assert perp.candles.source == "BTCUSD_PERP-1m-2024-01.zip" and len(perp) == 300
    np.testing.assert_array_equal(perp.candles.close, table.column("close").to_numpy())


def test_bar_grid_ignores_gaps():
    assert bar_grid_ms(np.array([], dtype=np.int64)) is None
    assert bar_grid_ms(np.array([T0, T0, T0])) is None
    assert bar_grid_ms(np.array([T0, T0 + 3 * MINUTE, T0 + 5 * MINUTE])) == MINUTE
    assert bar_grid_ms(np.array([T0 + 10 * MINUTE, T0, T0 + 4 * MINUTE])) == 2 * MINUTE


@pytest.mark.parametrize("name", ["ETHUSDT-1m-2024-01.parquet", "ethusdt_2024-01.parquet"])
def test_sparse_minutes_are_still_one_minute_bars(tmp_path, name):
    """Quiet minutes without trades are missing rows: the grid stays 1 minute though the
    median step is 2+ minutes, with or without an interval in the file name."""
    full = candles_table(2000, seed=3)
    kept = np.sort(np.random.default_rng(0).choice(2000, size=800, replace=False))
    sparse = take(full, kept)
    assert np.median(np.diff(ms(sparse))) >= 2 * MINUTE  # a median would say 2+ minutes
    path = raw_dir(tmp_path, {name: sparse}) / name
    c = read_raw_file(path)[0]
    assert c.bar_ms == MINUTE and len(c) == 800
    s = read_symbol([path], "ETHUSDT")
    assert s.bar_ms == MINUTE and s.candles.bar_ms == MINUTE


def test_named_interval_wins_over_a_coarser_grid(tmp_path, table):
    every_other = take(table, np.arange(0, 300, 2))  # a 2-minute grid
    d = raw_dir(tmp_path, {"A-1m-2024-01.parquet": every_other, "B_2024-01.parquet": every_other})
    candles, _ = read_raw_dir(d)
    assert candles["A"].bar_ms == MINUTE  # the name says 1m and 2 minutes is a multiple
    assert candles["B"].bar_ms == 2 * MINUTE  # no name: the grid


def test_grid_must_fit_the_named_interval(tmp_path, table):
    path = raw_dir(tmp_path, {"X-5m-2024-01.parquet": table}) / "X-5m-2024-01.parquet"
    with pytest.raises(DataError) as err:
        read_raw_file(path)
    assert str(path) in one_line(err)
    assert "says 5m bars (5 minutes)" in str(err.value) and "multiples of 1 minute" in str(
        err.value
    )


def test_timestamps_off_any_bar_grid(tmp_path, table):
    # Trade times rather than bar open times: steps of 59 997 and 60 004 ms.
    steps = np.where(np.arange(table.num_rows - 1) % 2, 59_997, 60_004)
    ts = T0 + np.concatenate([[0], np.cumsum(steps)])
    path = raw_dir(tmp_path, {"X_2024-01.parquet": with_times(table, ts)}) / "X_2024-01.parquet"
    with pytest.raises(DataError, match="not on a regular bar grid") as err:
        read_raw_file(path, on_bad_rows="drop")
    assert str(path) in one_line(err)
    assert "greatest common divisor of 7 ms" in str(err.value)


def test_one_minute_and_five_minute_files_of_a_symbol(tmp_path):
    d = raw_dir(
        tmp_path,
        {
            "BTCUSDT-1m-2024-01.zip": candles_table(100),
            "BTCUSDT-5m-2024-02.zip": candles_table(100, bar_minutes=5),
        },
    )
    with pytest.raises(DataError) as err:
        read_raw_dir(d)
    assert one_line(err) == (
        "symbol BTCUSDT: BTCUSDT-1m-2024-01.zip has 1-minute bars, BTCUSDT-5m-2024-02.zip "
        "has 5-minute bars; prepare one interval at a time"
    )


def test_files_offset_against_each_other(tmp_path, table):
    later = with_times(table.slice(200), ms(table.slice(200)) + 30_000)  # on :30 seconds
    d = raw_dir(
        tmp_path, {"X-1m-2024-01.parquet": table.slice(0, 200), "X-1m-2024-02.parquet": later}
    )
    with pytest.raises(DataError) as err:
        read_symbol(sorted(d.iterdir()), "X")
    message = one_line(err)
    assert "X-1m-2024-02.parquet is offset by 30 seconds from X-1m-2024-01.parquet" in message


def test_too_few_bars_to_know_the_interval(tmp_path, table):
    d = raw_dir(tmp_path, {"X_2024-01.parquet": table.slice(0, 1)})
    with pytest.raises(DataError, match=r"symbol X: 1 bar in X_2024-01.parquet; need at least 2"):
        read_symbol([d / "X_2024-01.parquet"], "X")
    # A named interval is enough to know it.
    d2 = raw_dir(tmp_path / "b", {"X-1h-2024-01.parquet": table.slice(0, 1)})
    assert read_symbol([d2 / "X-1h-2024-01.parquet"], "X").bar_ms == 3_600_000


# ------------------------------------------------------------------------ bad rows


def test_broken_row_errors_or_is_dropped(tmp_path, table):
    path = raw_dir(tmp_path, {"X_2024-01.parquet": _edit(table, "high", 5, 1.0)})
    path = path / "X_2024-01.parquet"
    with pytest.raises(DataError) as err:
        read_symbol([path], "X")
    assert one_line(err).startswith(f"{path}: 'high' is below 'low' at row 5 (")

    s = read_symbol([path], "X", on_bad_rows="drop")
    assert s.bad_rows == [
        BadRow("X_2024-01.parquet", 5, "X", int(ms(table)[5]), "'high' is below 'low'")
    ]
    assert len(s) == 299 and 5 not in s.candles.row.tolist()
    assert int(ms(table)[5]) not in s.candles.timestamp.tolist()
    assert s.bar_ms == MINUTE and s.duplicates == 0


def test_empty_values_under_drop(tmp_path, table):
    close = table.column("close").to_pylist()
    close[3] = None
    times = table.column("timestamp").to_pylist()
    times[8] = None
    bad = _with(
        _with(table, "close", close),
        "timestamp",
        pa.array(times, table.schema.field("timestamp").type),
    )
    path = raw_dir(tmp_path, {"X_2024-01.parquet": bad}) / "X_2024-01.parquet"
    with pytest.raises(DataError, match="column 'timestamp' is empty at row 8"):
        read_raw_file(path)
    c = read_raw_file(path, on_bad_rows="drop")[0]
    assert [(b.row, b.timestamp_ms, b.reason) for b in c.bad_rows] == [
        (3, int(ms(table)[3]), "column 'close' is empty"),
        (8, None, "column 'timestamp' is empty"),
    ]
    assert len(c) == 298 and not np.isnan(c.close).any()


def test_out_of_order_row_under_drop(tmp_path, table):
    ts = ms(table).copy()
    ts[50] = ts[10]  # a stray old bar between rows 49 and 51
    changed = _edit(with_times(table, ts), "close", 50, float(table.column("low")[50].as_py()))
    path = raw_dir(tmp_path, {"X_2024-01.parquet": changed}) / "X_2024-01.parquet"
    with pytest.raises(DataError, match="'timestamp' at row 50 .* is earlier than"):
        read_raw_file(path)
    s = read_symbol([path], "X", on_bad_rows="drop")
    assert s.bad_rows == [BadRow("X_2024-01.parquet", 50, "X", int(ts[10]), OUT_OF_ORDER_REASON)]
    assert len(s) == 299 and (np.diff(s.candles.timestamp) > 0).all()
    assert s.duplicates == 0  # out of order, not a duplicate of row 10


def test_identical_duplicates_collapse_under_both_policies(tmp_path, table):
    rows = np.concatenate([np.arange(0, 101), [100, 100], np.arange(101, 300)])
    d = raw_dir(
        tmp_path,
        {
            "X-1m-2024-01.parquet": take(table, rows),  # row 100 three times
            "X-1m-2024-02.zip": table.slice(250),  # overlaps the first file's last 50 rows
        },
    )
    for policy in ("error", "drop"):
        s = read_symbol(sorted(d.iterdir()), "X", on_bad_rows=policy)
        assert s.duplicates == 2 + 50 and s.bad_rows == []
        np.testing.assert_array_equal(s.candles.timestamp, ms(table))
        for name in FIELDS:
            np.testing.assert_array_equal(getattr(s.candles, name), table.column(name).to_numpy())
    c = read_raw_file(d / "X-1m-2024-01.parquet")[0]
    assert c.duplicates == 2 and len(c) == 300


def test_conflicting_duplicates_in_one_file(tmp_path, table):
    rows = np.concatenate([np.arange(0, 101), [100, 100], np.arange(101, 300)])
    dup = take(table, rows)  # file rows 100, 101, 102 are bar 100
    dup = louder(dup, 102)  # the third copy differs
    path = raw_dir(tmp_path, {"X_2024-01.parquet": dup}) / "X_2024-01.parquet"
    at = int(ms(table)[100])
    with pytest.raises(DataError) as err:
        read_symbol([path], "X")
    assert one_line(err) == (
        f"{path}: column 'timestamp' at row 102 (2024-01-01T01:40:00+00:00, symbol X) "
        "duplicates row 100 with different values; keep one of them"
    )
    s = read_symbol([path], "X", on_bad_rows="drop")
    assert s.bad_rows == [
        BadRow("X_2024-01.parquet", r, "X", at, CONFLICT_REASON) for r in (100, 101, 102)
    ]
    assert at not in s.candles.timestamp.tolist() and len(s) == 299 and s.duplicates == 0
    c = read_raw_file(path, on_bad_rows="drop")[0]  # the file alone says the same
    assert list(c.bad_rows) == s.bad_rows and len(c) == 299 and c.duplicates == 0


def test_conflicting_duplicates_across_files(tmp_path, table):
    other = louder(table.slice(290), 0)  # bar 290, other volume
    d = raw_dir(tmp_path, {"X_2024-01.parquet": table, "X_2024-02.parquet": other})
    at = int(ms(table)[290])
    with pytest.raises(DataError) as err:
        read_symbol(sorted(d.iterdir()), "X")
    assert one_line(err) == (
        "symbol X: X_2024-01.parquet row 290 and X_2024-02.parquet row 0 have the same "
        "timestamp (2024-01-01T04:50:00+00:00) but different values; keep one of them"
    )
    s = read_symbol(sorted(d.iterdir()), "X", on_bad_rows="drop")
    assert s.bad_rows == [
        BadRow("X_2024-01.parquet", 290, "X", at, CONFLICT_REASON),
        BadRow("X_2024-02.parquet", 0, "X", at, CONFLICT_REASON),
    ]
    assert at not in s.candles.timestamp.tolist()
    assert len(s) == 299 and s.duplicates == 9  # bars 291..299 are in both files


def test_a_conflict_inside_one_file_drops_the_timestamp_everywhere(tmp_path, table):
    inner = louder(take(table, [*range(0, 11), 10, *range(11, 20)]), 11)
    d = raw_dir(tmp_path, {"X_2024-01.parquet": inner, "X_2024-02.parquet": table.slice(10, 5)})
    s = read_symbol(sorted(d.iterdir()), "X", on_bad_rows="drop")
    at = int(ms(table)[10])
    assert [(b.file, b.row) for b in s.bad_rows] == [
        ("X_2024-01.parquet", 10),
        ("X_2024-01.parquet", 11),
        ("X_2024-02.parquet", 0),
    ]
    assert {b.timestamp_ms for b in s.bad_rows} == {at} and at not in s.candles.timestamp


def test_no_valid_row_left(tmp_path, table):
    bad = _with(table.slice(0, 3), "open", [-1.0, -1.0, -1.0])
    path = raw_dir(tmp_path, {"X_2024-01.parquet": bad}) / "X_2024-01.parquet"
    with pytest.raises(DataError) as err:
        read_symbol([path], "X", on_bad_rows="drop")
    assert one_line(err) == (
        "symbol X: no valid row left in X_2024-01.parquet (3 bad rows; the first: "
        "X_2024-01.parquet row 0, column 'open' is <= 0); fix the data"
    )


# ---------------------------------------------------------------- one symbol at a time


def multi_symbol_table(table: pa.Table) -> pa.Table:
    """AAA, BBB and CCC interleaved row by row (file row 3k + i is symbol i's row k)."""
    n = table.num_rows
    both = pa.concat_tables([table, table, table])
    order = np.arange(3 * n).reshape(3, n).T.ravel()
    symbols = np.repeat(np.array(["AAA", "BBB", "CCC"]), n)[order]
    return take(both, order).append_column("symbol", pa.array(symbols))


@pytest.mark.parametrize("suffix", [".parquet", ".csv"])
def test_read_symbol_reads_only_its_symbol(tmp_path, table, suffix):
    mixed = multi_symbol_table(table)
    mixed = _edit(mixed, "high", 3 * 7 + 1, 1.0)  # a broken BBB row
    path = tmp_path / f"all{suffix}"
    if suffix == ".parquet":
        pq.write_table(mixed, path, row_group_size=128)  # several row groups
    else:
        mixed = mixed.set_column(0, "timestamp", mixed.column("timestamp").cast(pa.int64()))
        pacsv.write_csv(mixed, path)
    assert symbols_in_file(path) == ["AAA", "BBB", "CCC"]

    s = read_symbol([path], "AAA")  # BBB's bad row is not read, so no error
    assert s.candles.row.tolist() == list(range(0, 3 * table.num_rows, 3))
    np.testing.assert_array_equal(s.candles.timestamp, ms(table))
    np.testing.assert_array_equal(s.candles.close, table.column("close").to_numpy())
    with pytest.raises(DataError, match=f"{path}: 'high' is below 'low' at row 22 "):
        read_symbol([path], "BBB")
    bbb = read_symbol([path], "BBB", on_bad_rows="drop")
    assert [(b.row, b.symbol) for b in bbb.bad_rows] == [(22, "BBB")]
    with pytest.raises(DataError, match="symbol DDD: no rows of it in all"):
        read_symbol([path], "DDD")


def test_symbols_in_file(tmp_path, table):
    empty = tmp_path / "X_2024-01.csv"
    empty.write_text("")
    header_only = tmp_path / "Y_2024-01.csv"
    header_only.write_text("timestamp,open,high,low,close,volume\n")
    pq.write_table(table.slice(0, 0), tmp_path / "Z_2024-01.parquet")
    binance = write_binance_csv(table, tmp_path / "BTCUSDT-1m-2024-01.zip")
    pq.write_table(table, tmp_path / "ethusdt_2024-01.parquet")
    assert symbols_in_file(empty) == [] and symbols_in_file(header_only) == []
    assert symbols_in_file(tmp_path / "Z_2024-01.parquet") == []
    assert symbols_in_file(binance) == ["BTCUSDT"]
    assert symbols_in_file(tmp_path / "ethusdt_2024-01.parquet") == ["ETHUSDT"]
    no_symbol = tmp_path / "s.parquet"
    pq.write_table(
        table.append_column("symbol", pa.array([None] + ["A"] * 299, pa.string())), no_symbol
    )
    with pytest.raises(DataError, match="column 'symbol' is empty at row 0"):
        symbols_in_file(no_symbol)


def test_output_is_deterministic(tmp_path, table):
    ts = ms(table).copy()
    ts[40] = ts[20]  # out of order
    a = _edit(
        _edit(with_times(table, ts), "open", 7, -1.0),
        "close",
        40,
        float(table.column("low")[40].as_py()),
    )
    b = louder(table.slice(150), 3)  # conflicts with a's row 153
    d = raw_dir(
        tmp_path,
        {"X_2024-02.parquet": b, "X_2024-01.parquet": a, "X-1m-2024-03.zip": table.slice(280)},
    )
    paths = sorted(d.iterdir())
    first = read_symbol(paths, "X", on_bad_rows="drop")
    again = read_symbol(list(reversed(paths)), "X", on_bad_rows="drop")
    assert [(b.file, b.row) for b in first.bad_rows] == [
        ("X_2024-01.parquet", 7),
        ("X_2024-01.parquet", 40),
        ("X_2024-01.parquet", 153),
        ("X_2024-02.parquet", 3),
    ]
    # Bars 150..279 but 153 are in two files (129 copies), 280..299 in three (40 copies).
    assert first.bad_rows == again.bad_rows and first.duplicates == again.duplicates == 169
    for name in ("timestamp", "row", *FIELDS):
        np.testing.assert_array_equal(getattr(first.candles, name), getattr(again.candles, name))
    assert first.candles.source == "X-1m-2024-03.zip, X_2024-01.parquet, X_2024-02.parquet"
