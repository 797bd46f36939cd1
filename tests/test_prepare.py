"""`prepare` end to end: the lake's files, schema, metadata, manifest and row groups;
CSV and Parquet give the same lake; bad input ends in one stderr line and exit 2."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from src.config import LabelConfig
from src.core import constants as C
from src.core.errors import DataError, UserError, run_cli
from src.data import prepare
from src.data.features import FEATURE_NAMES, WARMUP_BARS, compute_features
from src.data.labels import barrier_trades, triple_barrier_labels
from src.data.lake_format import lake_schema, month_slices
from src.data.prepare import prepare_lake
from src.data.raw_io import iso_ms, read_raw_dir
from src.data.synthetic import generate_candles
from tests.conftest import TINY_BAR_MINUTES, TINY_BARS, TINY_ROW_GROUP_ROWS
from tests.test_raw_io import write_binance_csv

REPO = Path(__file__).resolve().parents[1]
BAR_MS = TINY_BAR_MINUTES * 60_000
HORIZON = 120 // TINY_BAR_MINUTES
MONTHS = ("2024-01", "2024-02", "2024-03")
SYMBOLS = ("SYNTH1", "SYNTH2")


def quiet(_msg: str) -> None:
    pass


def ms(table: pa.Table, column: str) -> np.ndarray:
    return table.column(column).cast(pa.int64()).to_numpy()


def lake_files(lake: Path) -> list[Path]:
    return sorted(lake.glob("*.parquet"))


def small_raw(tmp_path: Path, n: int = 400, name: str = "raw", **edits) -> Path:
    """A raw dir with one 15-minute file `ABC_2024-01.parquet`; `edits` replace columns."""
    table = generate_candles(n, seed=2, bar_minutes=15).drop_columns(["symbol"])
    for column, values in edits.items():
        i = table.column_names.index(column)
        table = table.set_column(i, column, pa.array(values))
    raw = tmp_path / name
    raw.mkdir()
    pq.write_table(table, raw / "ABC_2024-01.parquet")
    return raw


# ------------------------------------------------------------------- the tiny lake


def test_one_file_per_symbol_and_month(tiny_lake: Path):
    names = sorted(p.name for p in tiny_lake.iterdir())
    expected = [f"{s}_{m}.parquet" for s in SYMBOLS for m in MONTHS]
    assert names == sorted([*expected, C.MANIFEST_NAME])


def test_schema_and_metadata_are_exact(tiny_lake: Path):
    for path in lake_files(tiny_lake):
        schema = pq.read_schema(path)
        assert schema.remove_metadata().equals(lake_schema())
        assert schema.names == [
            "timestamp",
            "symbol",
            *FEATURE_NAMES,
            "label",
            "horizon_end",
            "close",
            "long_exit",
            "long_return",
            "long_risk",
            "superlong_exit",
            "superlong_return",
            "superlong_risk",
            "short_exit",
            "short_return",
            "short_risk",
        ]
        assert schema.field("timestamp").type == pa.timestamp("ms", tz="UTC")
        assert schema.field("horizon_end").type == pa.timestamp("ms", tz="UTC")
        assert schema.field("label").type == pa.int8()
        meta = json.loads(schema.metadata[C.PARQUET_META_KEY])
        assert meta == {
            "version": 2,
            "features": list(FEATURE_NAMES),
            "bar_ms": BAR_MS,
            "label": {
                "horizon_minutes": 120,
                "barriers": "fixed",
                "upper1_pct": 0.8,
                "upper2_pct": 1.6,
                "lower_pct": 0.75,
            },
        }


def test_rows_are_sorted_labelled_and_in_row_groups(tiny_lake: Path):
    last_by_symbol: dict[str, int] = {}
    for path in lake_files(tiny_lake):
        pf = pq.ParquetFile(path)
        groups = [pf.metadata.row_group(i).num_rows for i in range(pf.num_row_groups)]
        assert len(groups) >= 2
        assert all(g == TINY_ROW_GROUP_ROWS for g in groups[:-1]) and groups[-1] <= 512
        table = pf.read()
        ts, end = ms(table, "timestamp"), ms(table, "horizon_end")
        symbol = path.name.split("_")[0]
        assert set(table.column("symbol").to_pylist()) == {symbol}
        assert (np.diff(ts) > 0).all()
        assert ts[0] > last_by_symbol.get(symbol, -1)
        last_by_symbol[symbol] = ts[-1]
        assert ((end > ts) & (end <= ts + HORIZON * BAR_MS)).all()  # no gaps here
        labels = table.column("label").to_numpy()
        assert labels.min() >= 0 and labels.max() <= 3
        for name in FEATURE_NAMES:
            assert np.isfinite(table.column(name).to_numpy()).all()


def test_manifest_describes_the_files(tiny_lake: Path, tiny_raw_dir: Path):
    manifest = json.loads((tiny_lake / C.MANIFEST_NAME).read_text())
    assert manifest["version"] == 2 and manifest["bar_ms"] == BAR_MS
    assert manifest["features"] == list(FEATURE_NAMES)
    assert manifest["label"] == {
        "horizon_minutes": 120,
        "barriers": "fixed",
        "upper1_pct": 0.8,
        "upper2_pct": 1.6,
        "lower_pct": 0.75,
    }
    assert manifest["source"] == str(tiny_raw_dir)
    assert [f["name"] for f in manifest["files"]] == [p.name for p in lake_files(tiny_lake)]
    total = np.zeros(4, np.int64)
    for entry in manifest["files"]:
        table = pq.read_table(tiny_lake / entry["name"])
        ts = ms(table, "timestamp")
        counts = np.bincount(table.column("label").to_numpy(), minlength=4)
        assert entry["rows"] == table.num_rows
        assert entry["symbol"] == entry["name"].split("_")[0]
        assert entry["start"] == iso_ms(ts[0]) and entry["end"] == iso_ms(ts[-1])
        assert entry["label_counts"] == counts.tolist()
        total += counts
    assert manifest["label_counts"] == total.tolist()
    assert manifest["files"][0]["start"] == "2024-01-01T15:00:00+00:00"  # 60 bars of warm-up


def test_lake_matches_features_and_labels_of_the_raw_series(tiny_lake: Path, tiny_raw_dir):
    raw = read_raw_dir(tiny_raw_dir)[0]["SYNTH2"].candles
    feats = compute_features(
        raw.open, raw.high, raw.low, raw.close, raw.volume, raw.taker_buy_volume
    )
    labels = triple_barrier_labels(
        raw.timestamp,
        raw.high,
        raw.low,
        raw.close,
        horizon_ms=120 * 60_000,
        upper1=0.008,
        upper2=0.016,
        lower=0.0075,
    )
    lake = pa.concat_tables(pq.read_table(p) for p in lake_files(tiny_lake) if "SYNTH2" in p.name)
    rows = np.arange(WARMUP_BARS, TINY_BARS - HORIZON)
    assert lake.num_rows == rows.size
    np.testing.assert_array_equal(ms(lake, "timestamp"), raw.timestamp[rows])
    np.testing.assert_array_equal(lake.column("label").to_numpy(), labels.label[rows])
    np.testing.assert_array_equal(ms(lake, "horizon_end"), labels.decided_ms[rows])
    for j, name in enumerate(FEATURE_NAMES):
        np.testing.assert_array_equal(lake.column(name).to_numpy(), feats[rows, j])
    trades = barrier_trades(
        raw.timestamp,
        raw.open,
        raw.high,
        raw.low,
        raw.close,
        horizon_ms=120 * 60_000,
        upper1=0.008,
        upper2=0.016,
        lower=0.0075,
    )
    np.testing.assert_array_equal(lake.column("close").to_numpy(), raw.close[rows])
    for name in ("long", "superlong", "short"):
        exits = raw.timestamp[trades.exit_bar[name][rows]]
        np.testing.assert_array_equal(ms(lake, f"{name}_exit"), exits)
        returns = lake.column(f"{name}_return").to_numpy()
        np.testing.assert_array_equal(returns, trades.gross_return[name][rows])
    np.testing.assert_allclose(lake.column("long_risk").to_numpy(), 0.0075)
    np.testing.assert_allclose(lake.column("short_risk").to_numpy(), 0.008)


# ------------------------------------------------------------- other end-to-end runs


def test_binance_csv_gives_the_same_lake_as_parquet(tmp_path: Path):
    table = generate_candles(3500, seed=5, bar_minutes=15).drop_columns(["symbol"])
    months = month_slices(ms(table, "timestamp"))
    assert len(months) == 2
    raw_pq, raw_csv = tmp_path / "pq", tmp_path / "csv"
    raw_pq.mkdir()
    raw_csv.mkdir()
    for (month, part), suffix in zip(months, (".csv", ".zip"), strict=True):
        chunk = table.slice(part.start, part.stop - part.start)
        pq.write_table(chunk, raw_pq / f"BTCUSDT-15m-{month}.parquet")
        write_binance_csv(chunk, raw_csv / f"BTCUSDT-15m-{month}{suffix}")
    a = prepare_lake(raw_pq, tmp_path / "lake_pq", row_group_rows=300, log=quiet)
    b = prepare_lake(raw_csv, tmp_path / "lake_csv", row_group_rows=300, log=quiet)
    assert {**a, "source": ""} == {**b, "source": ""}
    for path in lake_files(tmp_path / "lake_pq"):
        other = tmp_path / "lake_csv" / path.name
        assert pq.read_table(path).equals(pq.read_table(other), check_metadata=True)
    assert [f["name"] for f in a["files"]] == ["BTCUSDT_2024-01.parquet", "BTCUSDT_2024-02.parquet"]


def test_a_gap_in_time_is_kept_honest(tmp_path: Path):
    """The horizon is time: across 100 missing bars no label looks further than 2 hours
    ahead, and the bars just before the gap are decided by the vertical barrier or by a
    bar inside their 2 hours."""
    table = generate_candles(500, seed=3, bar_minutes=15).drop_columns(["symbol"])
    holed = pa.concat_tables([table.slice(0, 200), table.slice(300)])  # 100 bars missing
    raw = tmp_path / "raw"
    raw.mkdir()
    pq.write_table(holed, raw / "ABC_2024-01.parquet")
    prepare_lake(raw, tmp_path / "lake", log=quiet)
    lake = pq.read_table(tmp_path / "lake" / "ABC_2024-01.parquet")
    span = ms(lake, "horizon_end") - ms(lake, "timestamp")
    assert lake.num_rows == 400 - WARMUP_BARS - HORIZON
    assert span.max() == HORIZON * BAR_MS and (span > 0).all()
    ts = ms(lake, "timestamp")
    before_gap = ms(holed, "timestamp")[199]
    near = np.flatnonzero((ts < before_gap) & (ts + HORIZON * BAR_MS > before_gap))
    assert near.size == HORIZON - 1
    assert (ms(lake, "horizon_end")[near] <= before_gap).sum() + (
        span[near] == HORIZON * BAR_MS
    ).sum() >= near.size


def test_rerun_replaces_the_lake_and_a_failed_run_keeps_it(tmp_path: Path, tiny_raw_dir: Path):
    out = tmp_path / "lake"
    prepare_lake(tiny_raw_dir, out, log=quiet)
    first = sorted(p.name for p in out.iterdir())
    prepare_lake(small_raw(tmp_path), out, log=quiet)  # one symbol, one month
    assert sorted(p.name for p in out.iterdir()) == ["ABC_2024-01.parquet", C.MANIFEST_NAME]
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    broken = small_raw(tmp_path, name="broken", close=[np.nan] * 400)
    with pytest.raises(DataError):
        prepare_lake(broken, out, log=quiet)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert len(first) == 7
    assert sorted(p.name for p in tmp_path.iterdir()) == ["broken", "lake", "raw"]  # no debris


def test_refuses_an_out_dir_it_did_not_write(tmp_path: Path):
    raw = small_raw(tmp_path)
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    with pytest.raises(UserError, match="notes.txt"):
        prepare_lake(raw, mine, log=quiet)
    with pytest.raises(UserError, match="no manifest.json"):
        prepare_lake(raw, _copy_raw(raw), log=quiet)
    with pytest.raises(UserError, match="is the raw directory"):
        prepare_lake(raw, raw, log=quiet)
    assert (mine / "notes.txt").read_text() == "keep me"


def _copy_raw(raw: Path) -> Path:
    """A directory of raw Parquet files that look like lake names but have no manifest."""
    other = raw.parent / "other"
    shutil.copytree(raw, other)
    return other


def test_mixed_bar_intervals_are_refused(tmp_path: Path):
    raw = tmp_path / "raw"
    raw.mkdir()
    pq.write_table(generate_candles(300, seed=1, bar_minutes=1), raw / "A.parquet")
    pq.write_table(generate_candles(300, seed=1, bar_minutes=15, symbol="B"), raw / "B.parquet")
    with pytest.raises(DataError, match="different bar intervals"):
        prepare_lake(raw, tmp_path / "lake", log=quiet)


def test_too_few_bars_and_odd_horizons(tmp_path: Path):
    with pytest.raises(DataError, match="ABC .* has 50 bars"):
        prepare_lake(small_raw(tmp_path, n=50), tmp_path / "lake", log=quiet)
    raw = small_raw(tmp_path, name="raw2")
    with pytest.raises(DataError, match="horizon of 10 min is shorter than its 15-min bars"):
        prepare_lake(raw, tmp_path / "lake", label=LabelConfig(horizon_minutes=10), log=quiet)
    # A horizon that is not a whole number of bars is fine: it is a time.
    prepare_lake(raw, tmp_path / "lake", label=LabelConfig(horizon_minutes=100), log=quiet)


# ---------------------------------------------------------------------------- CLI


def test_cli_prints_the_label_distribution(tmp_path: Path, capsys):
    raw = small_raw(tmp_path)
    out = tmp_path / "lake"
    argv = ["--raw-dir", str(raw), "--data-dir", str(out), "--row-group-rows", "64"]
    assert run_cli(prepare.main, argv) == 0
    printed = capsys.readouterr().out
    for name in C.CLASS_NAMES:
        assert name in printed
    assert "%" in printed and str(out) in printed
    assert pq.ParquetFile(out / "ABC_2024-01.parquet").metadata.row_group(0).num_rows == 64


def test_old_flag_names_still_work_with_a_one_line_note(tmp_path: Path, capsys):
    raw, out = small_raw(tmp_path), tmp_path / "lake"
    assert run_cli(prepare.main, ["--raw", str(raw), "--out", str(out)]) == 0
    assert (out / "ABC_2024-01.parquet").is_file()
    notes = [x for x in capsys.readouterr().err.splitlines() if x.startswith("warning: --")]
    assert notes == [
        "warning: --raw is now --raw-dir; the old name still works for now",
        "warning: --out is now --data-dir; the old name still works for now",
    ]


def _error_line(capsys, argv: list[str]) -> str:
    assert run_cli(prepare.main, argv) == 2
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), captured.err
    return lines[0]


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("missing_dir", "does not exist"),
        ("missing_column", "missing column 'volume'"),
        ("unsorted", "column 'timestamp' at row 8 .* is earlier than"),
        ("nan_close", "column 'close' is NaN at row 5"),
        ("corrupt", "not a readable Parquet file"),
        ("bad_flag", "--upper2-pct"),
    ],
)
def test_cli_errors_are_one_line(tmp_path: Path, capsys, case: str, expected: str):
    out = tmp_path / "lake"
    extra: list[str] = []
    if case == "missing_dir":
        raw = tmp_path / "nowhere"
    elif case == "missing_column":
        raw = small_raw(tmp_path)
        path = raw / "ABC_2024-01.parquet"
        pq.write_table(pq.read_table(path).drop_columns(["volume"]), path)
    elif case == "unsorted":
        ts = np.datetime64("2024-01-01", "ms").astype(np.int64) + np.arange(400) * 900_000
        ts[[7, 8]] = ts[[8, 7]]
        raw = small_raw(tmp_path, timestamp=ts)
    elif case == "nan_close":
        close = generate_candles(400, seed=2, bar_minutes=15).column("close").to_numpy().copy()
        close[5] = np.nan
        raw = small_raw(tmp_path, close=close)
    elif case == "corrupt":
        raw = small_raw(tmp_path)
        (raw / "ABC_2024-02.parquet").write_bytes(b"not parquet at all")
    else:
        raw = small_raw(tmp_path)
        extra = ["--upper1-pct", "2", "--upper2-pct", "1"]
    line = _error_line(capsys, ["--raw-dir", str(raw), "--data-dir", str(out), *extra])
    assert re.search(expected, line), line
    if case not in ("missing_dir", "bad_flag"):
        assert "ABC_2024-0" in line  # names the file
    assert not out.exists()


def test_unknown_flag_exits_non_zero(capsys: pytest.CaptureFixture[str]):
    assert run_cli(prepare.main, ["--raw-dir", "x", "--bogus"]) == 2
    assert capsys.readouterr().err.startswith("error: unrecognized arguments: --bogus")


def test_module_entry_point_prints_no_traceback(tmp_path: Path):
    result = subprocess.run(
        [sys.executable, "-m", "src.data.prepare", "--raw-dir", str(tmp_path / "nope")],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("error: ")
    assert "Traceback" not in result.stderr
