"""Synthetic candles: determinism, candle consistency, the planted relation, label mix."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from src.core.errors import UserError, run_cli
from src.data import synthetic
from src.data.labels import label_counts, triple_barrier_labels
from src.data.raw_io import read_raw_dir, table_to_candles
from src.data.synthetic import generate_candles, symbol_names, write_raw


def arrays(table: pa.Table) -> dict[str, np.ndarray]:
    out = {n: table.column(n).to_numpy() for n in table.column_names if n != "symbol"}
    out["timestamp"] = table.column("timestamp").cast(pa.int64()).to_numpy()
    return out


def test_same_seed_same_candles_other_seed_other_candles():
    a = generate_candles(3000, seed=1)
    assert a.equals(generate_candles(3000, seed=1))
    assert not np.allclose(arrays(a)["close"], arrays(generate_candles(3000, seed=2))["close"])
    rw = generate_candles(3000, seed=1, mode="random_walk")
    assert not np.allclose(arrays(a)["close"], arrays(rw)["close"])


@pytest.mark.parametrize("bar_minutes", [1, 15])
def test_candles_follow_the_raw_contract(tmp_path: Path, bar_minutes: int):
    table = generate_candles(2000, seed=3, bar_minutes=bar_minutes, symbol="ABC")
    assert table.column_names == [
        "timestamp",
        "open",
        "high",
        "low",
        "close",
        "volume",
        "taker_buy_volume",
        "symbol",
    ]
    assert table.schema.field("timestamp").type == pa.timestamp("ms", tz="UTC")
    a = arrays(table)
    assert a["timestamp"][0] == np.datetime64("2024-01-01", "ms").astype(np.int64)
    assert (np.diff(a["timestamp"]) == bar_minutes * 60_000).all()
    assert (a["high"] >= np.maximum(a["open"], a["close"])).all()
    assert (a["low"] <= np.minimum(a["open"], a["close"])).all()
    assert (a["open"][1:] == a["close"][:-1]).all()
    assert (a["volume"] > 0).all()
    assert ((a["taker_buy_volume"] > 0) & (a["taker_buy_volume"] < a["volume"])).all()
    assert set(table.column("symbol").to_pylist()) == {"ABC"}
    table_to_candles(table, tmp_path / "ABC.parquet")  # passes raw validation


def test_volume_rises_with_volatility():
    a = arrays(generate_candles(20_000, seed=4))
    move = np.abs(np.diff(np.log(a["close"])))
    assert np.corrcoef(move, a["volume"][1:])[0, 1] > 0.3


def _flow_predicts_future(table: pa.Table, past: int = 15, ahead: int = 15) -> float:
    """Correlation of the mean taker-buy imbalance over the last `past` bars with the
    volatility-scaled return over the next `ahead` bars, at non-overlapping points."""
    a = arrays(table)
    imb = 2 * a["taker_buy_volume"] / a["volume"] - 1
    log_c = np.log(a["close"])
    ret = np.diff(log_c, prepend=log_c[0])
    t = np.arange(60, len(log_c) - ahead, ahead)
    past_flow = np.array([imb[i - past + 1 : i + 1].mean() for i in t])
    vol = np.array([np.sqrt(np.mean(ret[i - 59 : i + 1] ** 2)) for i in t])
    future = (log_c[t + ahead] - log_c[t]) / vol
    return float(np.corrcoef(past_flow, future)[0, 1])


@pytest.mark.parametrize("seed", [7, 8])
def test_order_flow_predicts_only_in_planted_mode(seed):
    # 50k bars give ~3300 independent points: the null's standard error is ~0.017.
    planted = _flow_predicts_future(generate_candles(50_000, seed=seed, mode="planted"))
    walk = _flow_predicts_future(generate_candles(50_000, seed=seed, mode="random_walk"))
    assert planted > 0.07
    assert abs(walk) < 0.05


@pytest.mark.parametrize("mode", ["planted", "random_walk"])
def test_default_label_mix_is_in_the_target_range(mode):
    a = arrays(generate_candles(200_000, seed=7, mode=mode))
    out = triple_barrier_labels(
        a["timestamp"],
        a["high"],
        a["low"],
        a["close"],
        horizon_ms=120 * 60_000,
        upper1=0.008,
        upper2=0.016,
        lower=0.0075,
    )
    share = np.array(label_counts(out.label)) / out.label.size
    assert 0.70 <= share[0] <= 0.85, share
    assert (share[1:3] >= 0.02).all(), share
    # Constant volatility makes +1.6 % in two hours rare in random_walk, but not absent.
    assert share[3] >= (0.02 if mode == "planted" else 0.0005), share


def test_200k_bars_generate_fast():
    start = time.perf_counter()
    generate_candles(200_000, seed=0)
    assert time.perf_counter() - start < 2.0


def test_write_raw_one_file_per_month(tmp_path: Path):
    out = tmp_path / "raw"
    paths = write_raw(out, n_bars=3000, seed=1, bar_minutes=15, n_symbols=2)
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted(p.name for p in paths)
    assert names == [f"SYNTH{s}_2024-{m:02d}.parquet" for s in (1, 2) for m in (1, 2)]
    jan = pq.read_table(out / "SYNTH2_2024-01.parquet")
    assert set(jan.column("symbol").to_pylist()) == {"SYNTH2"}
    candles, _ = read_raw_dir(out)
    assert sorted(candles) == ["SYNTH1", "SYNTH2"] and len(candles["SYNTH1"]) == 3000
    # Symbol i (from 0) uses seed + i.
    expected = generate_candles(3000, seed=2, bar_minutes=15).column("close").to_numpy()
    np.testing.assert_array_equal(candles["SYNTH2"].candles.close, expected)
    # A rewrite replaces the whole directory: no stale months or symbols remain.
    write_raw(out, n_bars=500, seed=1, bar_minutes=15)
    assert sorted(p.name for p in out.iterdir()) == ["SYNTH_2024-01.parquet"]


def test_write_raw_refuses_a_directory_with_other_files(tmp_path: Path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(UserError, match="notes.txt"):
        write_raw(tmp_path, n_bars=100, seed=1)
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]


def test_symbol_names():
    assert symbol_names(1) == ["SYNTH"]
    assert symbol_names(3) == ["SYNTH1", "SYNTH2", "SYNTH3"]


def test_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    argv = ["--raw-dir", str(tmp_path / "r"), "--synthetic-bars", "200", "--bar-minutes", "15"]
    assert run_cli(synthetic.main, [*argv, "--mode", "random_walk", "--synthetic-seed", "3"]) == 0
    assert (tmp_path / "r" / "SYNTH_2024-01.parquet").is_file()
    assert run_cli(synthetic.main, [*argv, "--synthetic-bars", "0"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "error: --synthetic-bars: data.synthetic_bars must be > 0, got 0"
    assert run_cli(synthetic.main, [*argv, "--mode", "trend"]) == 2
    assert "invalid choice: 'trend'" in capsys.readouterr().err
