"""`prepare` on data it did not generate: calm markets, outages, several symbols in
parallel, exchange file names, broken rows. Each test builds its own candles."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from src.config import LabelConfig
from src.core import constants as C
from src.core.errors import run_cli
from src.data import prepare
from src.data.label_mix import MOVE_EDGES, mix_problems, move_histogram, share_above
from src.data.prepare import prepare_lake

HOUR = 3_600_000
MINUTE = 60_000
START = 1704067200000  # 2024-01-01


def candles(n: int, step_ms: int, vol: float, seed: int = 0, ts: np.ndarray | None = None):
    """A random walk of `n` bars with moves of about `vol` per bar."""
    rng = np.random.default_rng(seed)
    close = 1.1 * np.exp(np.cumsum(rng.standard_normal(n) * vol))
    open_ = np.concatenate(([1.1], close[:-1]))
    high = np.maximum(open_, close) * np.exp(rng.exponential(vol / 3, n))
    low = np.minimum(open_, close) * np.exp(-rng.exponential(vol / 3, n))
    ts = START + np.arange(n, dtype=np.int64) * step_ms if ts is None else ts
    return pa.table(
        {
            "timestamp": pa.array(ts, pa.timestamp("ms", tz="UTC")),
            "open": open_,
            "high": high,
            "low": low,
            "close": close,
            "volume": rng.uniform(1, 10, n),
        }
    )


def write(raw: Path, name: str, table: pa.Table) -> Path:
    raw.mkdir(exist_ok=True)
    pq.write_table(table, raw / name)
    return raw


def shares(manifest: dict) -> np.ndarray:
    counts = np.asarray(manifest["label_counts"], np.float64)
    return counts / counts.sum()


def quiet(_msg: str) -> None:
    pass


# ------------------------------------------------------------ an honest label mix


def test_calm_hourly_bars_warn_with_barriers_computed_from_the_data(tmp_path, capsys):
    """Moves of 0.1% an hour never reach 0.75%: all Neutro. Nothing warned before; now
    the warning names the classes and suggests barriers that fit this data."""
    raw = write(tmp_path / "raw", "EURUSD-1h-2024.parquet", candles(5000, HOUR, 0.001))
    argv = ["--raw-dir", str(raw), "--data-dir", str(tmp_path / "lake")]
    assert run_cli(prepare.main, argv) == 0
    err = capsys.readouterr().err
    assert "warning: the label mix cannot be learnt" in err
    assert "Neutro holds 100.0% of rows" in err and "SuperLong holds 0 rows" in err
    suggested = err.split("try ")[1].split(" (touched")[0].split()
    assert suggested[0] == "--upper1-pct" and "--barriers volatility" in err
    # The suggestion is concrete: following it gives a learnable mix.
    out = tmp_path / "lake2"
    assert run_cli(prepare.main, ["--raw-dir", str(raw), "--data-dir", str(out), *suggested]) == 0
    assert "cannot be learnt" not in capsys.readouterr().err
    assert shares(json.loads((out / C.MANIFEST_NAME).read_text())).min() > 0.03


def test_volatility_barriers_fit_a_calm_series(tmp_path):
    raw = write(tmp_path / "raw", "EURUSD-1h-2024.parquet", candles(5000, HOUR, 0.001))
    label = LabelConfig(barriers="volatility")
    manifest = prepare_lake(raw, tmp_path / "lake", label=label, log=quiet)
    assert shares(manifest).min() >= 0.01
    assert manifest["label"] == {
        "horizon_minutes": 120,
        "barriers": "volatility",
        "vol_window": 100,
        "upper1_mult": 1.0,
        "upper2_mult": 2.0,
        "lower_mult": 1.0,
    }
    meta = json.loads(
        pq.read_schema(tmp_path / "lake" / manifest["files"][0]["name"]).metadata[
            C.PARQUET_META_KEY
        ]
    )
    assert meta["label"] == manifest["label"]


def test_strict_refuses_an_unlearnable_mix_and_keeps_the_previous_lake(tmp_path, capsys):
    good = write(tmp_path / "good", "EURUSD-1h-2024.parquet", candles(5000, HOUR, 0.01))
    calm = write(tmp_path / "calm", "EURUSD-1h-2024.parquet", candles(5000, HOUR, 0.001))
    lake = tmp_path / "lake"
    prepare_lake(good, lake, log=quiet)
    before = {p.name: p.read_bytes() for p in lake.iterdir()}
    argv = ["--raw-dir", str(calm), "--data-dir", str(lake), "--strict"]
    assert run_cli(prepare.main, argv) == 2
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and "cannot be learnt" in lines[0] and "(--strict)" in lines[0]
    assert {p.name: p.read_bytes() for p in lake.iterdir()} == before


def test_mix_problems_thresholds():
    assert mix_problems([8000, 700, 700, 600]) == []
    assert mix_problems([9700, 100, 100, 100]) == []
    assert mix_problems([98_000, 800, 600, 600]) == ["Neutro holds 98.0% of rows"]
    assert mix_problems([10_000, 5000, 74, 1]) == [
        "Long holds 74 rows (0.49%)",
        "SuperLong holds 1 row (0.01%)",
    ]
    assert mix_problems([10_000, 5000, 1500, 80]) == ["SuperLong holds 80 rows (0.48%)"]
    assert mix_problems([500, 200, 200, 99]) == ["SuperLong holds 99 rows (9.91%)"]


def test_share_above_reads_the_histogram():
    moves = np.linspace(0.001, 0.01, 10_000)  # uniform: 30% of bars reach 0.0073
    value = share_above(move_histogram(moves), 0.30)
    assert value == pytest.approx(0.0073, rel=0.03)
    assert share_above(move_histogram(np.zeros(100)), 0.3) is None
    assert share_above(np.zeros(MOVE_EDGES.size + 1, np.int64), 0.3) is None


# --------------------------------------------------------------- time is the truth


def test_an_outage_never_stretches_a_label_past_its_horizon(tmp_path):
    """A 3-day outage in 1-minute bars: no label is decided more than 2 hours after its
    bar (it was 3 days, all SuperLong, before)."""
    n = 3000
    ts = START + np.arange(n, dtype=np.int64) * MINUTE
    ts[1500:] += 3 * 24 * HOUR
    table = candles(n, MINUTE, 0.001, ts=ts)
    close = table.column("close").to_numpy().copy()
    close[1500:] *= 1.05  # the market reopened 5% higher
    bump = {c: table.column(c).to_numpy().copy() for c in ("open", "high", "low")}
    for c in bump:
        bump[c][1500:] *= 1.05
    for name, values in {**bump, "close": close}.items():
        table = table.set_column(table.column_names.index(name), name, pa.array(values))
    raw = write(tmp_path / "raw", "BTCUSDT-1m-2024-01.parquet", table)
    prepare_lake(raw, tmp_path / "lake", log=quiet)
    lake = pa.concat_tables(pq.read_table(p) for p in sorted((tmp_path / "lake").glob("*.parquet")))
    start = lake.column("timestamp").cast(pa.int64()).to_numpy()
    end = lake.column("horizon_end").cast(pa.int64()).to_numpy()
    assert (end - start).max() <= 120 * MINUTE
    before = start < ts[1500]
    labels = lake.column("label").to_numpy()
    assert (labels[before & (start > ts[1500] - 120 * MINUTE)] != 3).all()


# ---------------------------------------------------------------- any amount of data


def test_workers_give_a_byte_identical_lake(tmp_path):
    raw = tmp_path / "raw"
    for i, sym in enumerate(("AAA", "BBB", "CCC")):
        write(raw, f"{sym}-15m-2024.parquet", candles(3000, 15 * MINUTE, 0.004, seed=i))
    one = prepare_lake(raw, tmp_path / "one", workers=1, log=quiet)
    two = prepare_lake(raw, tmp_path / "two", workers=2, log=quiet)
    assert one == two
    names = sorted(p.name for p in (tmp_path / "one").iterdir())
    assert names == sorted(p.name for p in (tmp_path / "two").iterdir())
    assert len(names) == 3 * 2 + 1
    for name in names:
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes()


def test_a_failing_symbol_in_a_worker_is_one_clear_error(tmp_path, capsys):
    raw = tmp_path / "raw"
    write(raw, "AAA-15m-2024.parquet", candles(3000, 15 * MINUTE, 0.004))
    write(raw, "BBB-15m-2024.parquet", candles(50, 15 * MINUTE, 0.004))
    argv = ["--raw-dir", str(raw), "--data-dir", str(tmp_path / "lake"), "--workers", "2"]
    assert run_cli(prepare.main, argv) == 2
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and "symbol BBB" in lines[0] and "has 50 bars" in lines[0]
    assert not (tmp_path / "lake").exists()


# ------------------------------------------------------------ exchange data as it is


def test_coin_m_contracts_stay_two_instruments(tmp_path):
    """A perpetual and a quarterly future were one `BTCUSD` series with a 2% jump."""
    raw = tmp_path / "raw"
    write(raw, "BTCUSD_PERP-1m-2024-01.parquet", candles(3000, MINUTE, 0.001, seed=1))
    later = START + 3000 * MINUTE + np.arange(3000, dtype=np.int64) * MINUTE
    write(raw, "BTCUSD_240329-1m-2024-02.parquet", candles(3000, MINUTE, 0.001, seed=2, ts=later))
    manifest = prepare_lake(raw, tmp_path / "lake", log=quiet)
    assert sorted(manifest["symbols"]) == ["BTCUSD_240329", "BTCUSD_PERP"]
    assert {f["name"] for f in manifest["files"]} == {
        "BTCUSD-240329_2024-01.parquet",
        "BTCUSD-PERP_2024-01.parquet",
    }


def _with_broken_rows(table: pa.Table) -> pa.Table:
    """Row 100: high below low; row 200 repeated exactly; row 300 repeated with another
    close (a conflicting duplicate)."""
    high = table.column("high").to_numpy().copy()
    high[100] = table.column("low")[100].as_py() * 0.99
    table = table.set_column(table.column_names.index("high"), "high", pa.array(high))
    conflict = table.slice(300, 1)
    conflict = conflict.set_column(
        conflict.column_names.index("close"), "close", pa.array([conflict["close"][0].as_py()])
    )
    conflict = conflict.set_column(
        conflict.column_names.index("volume"), "volume", pa.array([123456.0])
    )
    parts = [table.slice(0, 201), table.slice(200, 1), table.slice(201, 100), conflict]
    return pa.concat_tables([*parts, table.slice(301)])


def test_bad_rows_stop_prepare_by_default(tmp_path, capsys):
    raw = write(
        tmp_path / "raw",
        "ABC-15m-2024.parquet",
        _with_broken_rows(candles(3000, 15 * MINUTE, 0.004)),
    )
    argv = ["--raw-dir", str(raw), "--data-dir", str(tmp_path / "lake")]
    assert run_cli(prepare.main, argv) == 2
    line = capsys.readouterr().err.strip()
    assert line.startswith("error: ") and "ABC-15m-2024.parquet" in line and "row 100" in line
    assert not (tmp_path / "lake").exists()


def test_bad_rows_dropped_go_to_the_quarantine_and_the_manifest(tmp_path, capsys):
    raw = write(
        tmp_path / "raw",
        "ABC-15m-2024.parquet",
        _with_broken_rows(candles(3000, 15 * MINUTE, 0.004)),
    )
    lake = tmp_path / "lake"
    argv = ["--raw-dir", str(raw), "--data-dir", str(lake), "--on-bad-rows", "drop"]
    assert run_cli(prepare.main, argv) == 0
    err = capsys.readouterr().err
    assert "left out 3 bad rows" in err and "_quarantine.parquet" in err
    quarantine = pq.read_table(lake / "_quarantine.parquet").to_pylist()
    assert [(q["file"], q["row"], q["reason"]) for q in quarantine] == [
        ("ABC-15m-2024.parquet", 100, "'high' is below 'low'"),
        ("ABC-15m-2024.parquet", 301, "conflicting duplicate timestamp"),
        ("ABC-15m-2024.parquet", 302, "conflicting duplicate timestamp"),
    ]
    manifest = json.loads((lake / C.MANIFEST_NAME).read_text())
    assert manifest["bad_rows"]["dropped"] == 3 and manifest["bad_rows"]["policy"] == "drop"
    assert manifest["duplicates_collapsed"] == 1
    assert manifest["symbols"]["ABC"]["bars"] == 3000 - 2  # row 100 and the conflict's bar
    # The loader never reads the quarantine as lake data.
    from src.data.lake import list_parquet_files

    assert lake / "_quarantine.parquet" not in list_parquet_files(lake)
    # ... and prepare may replace a lake that holds one.
    assert run_cli(prepare.main, argv) == 0
