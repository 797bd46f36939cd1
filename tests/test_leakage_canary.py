"""Leakage canary: the whole pipeline (generate, prepare, train, evaluate) on data where
the future cannot be predicted must not beat chance, and on data with a planted
relation it must clearly beat it.

The canary data are `random_walk` candles: independent, identically distributed
increments with constant volatility and order flow independent of the future. The label
of a window (its next 120 bars) is then independent of every feature (its past bars), so
the null "macro-F1 <= random baseline" holds for any pipeline that does not look ahead.

Margin: 4 standard deviations of the macro-F1 the model's own test predictions reach
when they are circularly shifted against the labels (`report.shift_null`). A shift
breaks the alignment but keeps the autocorrelation of overlapping windows and labels.
The margin therefore reflects the test set's size *and* its effective number of
independent samples; a plain permutation (shown in the messages) would make it several
times too tight. Three pipelines, about 10 s each on one thread.

The same holds as a trade: on random_walk data, the model's expectancy after costs
does not beat its own decisions circularly shifted in time (the backtest's `random`
baseline) by more than 4 of that baseline's standard deviations. On planted data it
beats them by more than 2: a small 1-epoch model's timing edge is real but modest
(about 2.2 sd at this seed), and the shifted decisions keep the model's clustering, so
their spread is wide.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from src.data import synthetic
from src.data.prepare import prepare_lake
from src.modelling.evaluate import evaluate_checkpoint
from src.modelling.evaluation import metrics
from src.modelling.trading.backtest_run import backtest_checkpoints
from src.modelling.trading.engine import Costs
from src.modelling.train import main as train_main

pytestmark = pytest.mark.slow

N_BARS = 300_000
SEED = 11
SIGMAS = 4.0
#: How far above its shifted decisions the planted model's expectancy must be.
TRADE_EDGE_SIGMAS = 2.0
#: Most windows go to test (a tight estimate; inference is cheap), enough to train.
SPLIT = ["--set", "data.val_fraction=0.05", "--set", "data.test_fraction=0.6"]
SMALL_RUN = [
    "--epochs", "1",
    "--batch-size", "256",
    "--seq-len", "16",
    "--precision", "fp32",
    "--progress", "lines",
    "--log-every", "1000000",
    "--set", "model.d_model=16",
    "--set", "model.n_heads=2",
    "--set", "model.n_layers=1",
    "--set", "model.d_ff=32",
    *SPLIT,
]  # fmt: skip


def inject_lookahead(lake: Path, column: str = "ret_60", bars: int = 60) -> None:
    """The classic bug: `column` at bar t becomes its value at t + bars (a forward return)."""
    for path in sorted(lake.glob("*.parquet")):
        pf = pq.ParquetFile(path)
        rows = pf.metadata.row_group(0).num_rows
        table = pf.read()
        values = table.column(column).to_numpy()
        leaked = np.zeros_like(values)
        leaked[:-bars] = values[bars:]
        i = table.schema.get_field_index(column)
        table = table.set_column(i, table.schema.field(i), pa.array(leaked, pa.float32()))
        pq.write_table(table, path, row_group_size=rows)


def run_pipeline(root: Path, mode: str, *, leak: bool = False) -> dict:
    raw, lake = root / "raw", root / "lake"
    synthetic.write_raw(raw, n_bars=N_BARS, seed=SEED, mode=mode)
    prepare_lake(raw, lake, log=lambda _: None)
    if leak:
        inject_lookahead(lake)
    checkpoint = root / "saimp_best.pth"
    args = ["--data-dir", str(lake), "--checkpoint", str(checkpoint)]
    args += ["--logs-dir", str(root / "logs"), "--runs-dir", str(root / "runs")]
    assert train_main([*args, *SMALL_RUN]) == 0
    return evaluate_checkpoint(checkpoint, log=lambda _: None).report


def trading_verdict(root: Path, sigmas: float) -> tuple[float, float, str]:
    """(model expectancy, threshold, message) of the test split's backtest: threshold =
    the shifted-decision baseline's mean + `sigmas` sd, after 2 bps of costs per side."""
    report = backtest_checkpoints(
        [root / "saimp_best.pth"], costs=Costs(fee_bps=1, slippage_bps=1), draws=100,
        log=lambda _: None,
    ).report  # fmt: skip
    rnd = report["baselines"]["random"]
    threshold = rnd["expectancy_bps"] + sigmas * rnd["expectancy_bps_sd"]
    message = (
        f"expectancy {report['expectancy_bps']:.2f} bps over {report['n_trades']} trades vs "
        f"shifted decisions {rnd['expectancy_bps']:.2f} ± {rnd['expectancy_bps_sd']:.2f} bps; "
        f"threshold {threshold:.2f}; always long "
        f"{report['baselines']['always_long']['expectancy_bps']:.2f}"
    )
    return report["expectancy_bps"], threshold, message


def permutation_sd(report: dict, y_true: np.ndarray | None = None) -> float:
    """Spread of macro-F1 if windows were independent (for contrast in the messages)."""
    cm = np.asarray(report["confusion_matrix"])
    k = cm.shape[0]
    y_true = np.repeat(np.arange(k), cm.sum(axis=1))
    y_pred = np.concatenate([np.repeat(np.arange(k), row) for row in cm])
    rng = np.random.default_rng(0)
    draws = [metrics.macro_f1(metrics.confusion_matrix(rng.permutation(y_true), y_pred, k))
             for _ in range(100)]  # fmt: skip
    return float(np.std(draws, ddof=1))


def verdict(report: dict) -> tuple[float, float, str]:
    """(threshold, margin, message): threshold = random baseline + SIGMAS * null sd."""
    chance = report["chance"]
    assert chance is not None, "the test split is too short for the chance level"
    random_f1 = report["baselines"]["random"]["macro_f1"]
    margin = SIGMAS * chance["null_sd"]
    threshold = random_f1 + margin
    message = (
        f"test macro-F1 {report['macro_f1']:.4f} vs random baseline {random_f1:.4f} "
        f"(majority {report['baselines']['majority']['macro_f1']:.4f}); margin "
        f"{SIGMAS:g} x {chance['null_sd']:.4f} = {margin:.4f} from the shifted-prediction "
        f"null over n={report['n_samples']:,} test windows (null mean "
        f"{chance['null_mean']:.4f}, 99.9th pct {chance['null_q999']:.4f}; independent "
        f"windows would claim sd {permutation_sd(report):.4f}); threshold {threshold:.4f}; "
        f"balanced accuracy {report['balanced_accuracy']:.4f}; labels "
        + ", ".join(f"{n} {d['fraction']:.1%}" for n, d in report["label_distribution"].items())
    )
    return threshold, margin, message


def test_random_walk_canary_does_not_beat_chance(tmp_path: Path) -> None:
    report = run_pipeline(tmp_path, "random_walk")
    threshold, _, message = verdict(report)
    print("\n[canary random_walk]", message)
    assert report["n_samples"] > 100_000, message
    assert report["macro_f1"] <= threshold, "look-ahead suspected: " + message
    expectancy, bar, trade_message = trading_verdict(tmp_path, SIGMAS)
    print("[canary random_walk, as trades]", trade_message)
    assert expectancy <= bar, "look-ahead suspected: " + trade_message


def test_planted_data_clearly_beats_baselines(tmp_path: Path) -> None:
    report = run_pipeline(tmp_path, "planted")
    threshold, _, message = verdict(report)
    print("\n[reverse check, planted]", message)
    base = report["baselines"]
    assert report["macro_f1"] > threshold, "the pipeline learns nothing: " + message
    assert report["macro_f1"] > base["majority"]["macro_f1"], message
    assert report["balanced_accuracy"] > base["random"]["balanced_accuracy"] + 0.05, message
    expectancy, bar, trade_message = trading_verdict(tmp_path, TRADE_EDGE_SIGMAS)
    print("[reverse check, planted, as trades]", trade_message)
    assert expectancy > bar, "the signals are not worth acting on: " + trade_message


def test_canary_catches_lookahead(tmp_path: Path) -> None:
    """Positive control: the same canary data with one forward-looking feature must fail."""
    report = run_pipeline(tmp_path, "random_walk", leak=True)
    threshold, _, message = verdict(report)
    print("\n[canary with a planted look-ahead]", message)
    assert report["macro_f1"] > threshold, "the canary cannot see a leak: " + message
