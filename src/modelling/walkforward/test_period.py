"""Judging one fold's checkpoint on its unseen period [from, to): as a classifier and as
a trade.

Predictions come from `saimp predict`'s code (`prediction.from_lake.predict_lake`:
the checkpoint's normalisation, windows, calibration and decision rule), one per
window ending in the period. Classification metrics compare each window's decision
(and the argmax of its calibrated probabilities) with the lake's label of its last
bar. The backtest is `saimp backtest`'s (`trading.backtest_run.backtest`) on the
period's bars, bars that end no window staying flat. Besides the report, the arrays
pooling needs are returned (`PeriodResult.arrays`, see `pooled.py`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from src.core.errors import UserError
from src.data.split import iso
from src.modelling.evaluation.metrics import confusion_matrix
from src.modelling.trading.backtest_run import align_decisions, backtest
from src.modelling.trading.baselines import random_decisions
from src.modelling.trading.engine import LONG, NEUTRO, STOP, SUPERLONG, Costs, simulate_symbol
from src.modelling.trading.metrics import concat_trades, portfolio_equity
from src.modelling.walkforward.pooled import Segment, bar_returns, classification

#: The strategies whose trades and bar returns are kept for pooling (random: `Segment`s).
KEPT = ("model", "always_long", "perfect")


@dataclass
class PeriodResult:
    summary: dict[str, Any]
    """JSON values: windows, metrics (decision and argmax), the backtest report."""
    arrays: dict[str, np.ndarray]
    """What pooling needs: confusion counts, trades and bar returns, random segments."""


def _indices(column: pa.ChunkedArray, names: list[str]) -> np.ndarray:
    return pc.index_in(column, value_set=pa.array(names)).to_numpy(zero_copy_only=False)


def period_predictions(
    predictor: Any, index: Any, from_ms: int, to_ms: int
) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """symbol -> (timestamps, argmax, decision) of the windows ending in [from, to)."""
    from src.modelling.prediction.from_lake import predict_lake

    names = list(predictor.class_names)
    parts: dict[str, list[tuple[np.ndarray, np.ndarray, np.ndarray]]] = {}
    for item in predict_lake(predictor, index, from_ms=from_ms, to_ms=to_ms):
        t = item.table
        parts.setdefault(item.symbol, []).append(
            (
                t.column("timestamp").cast("int64").to_numpy(),
                _indices(t.column("predicted"), names).astype(np.int8),
                _indices(t.column("decision"), names).astype(np.int8),
            )
        )
    return {s: tuple(np.concatenate(c) for c in zip(*p, strict=True)) for s, p in parts.items()}


def _strategy_arrays(name: str, bars: list, decisions: list, costs: Costs, short: bool) -> dict:
    """Trades (net, R, signal, entry time) and portfolio bar returns of `decisions`."""
    results = [
        simulate_symbol(b, d, costs=costs, short_stops=short)
        for b, d in zip(bars, decisions, strict=True)
    ]
    trades = concat_trades(results)
    times, equity = portfolio_equity(bars, results)
    out = {
        f"{name}_net": trades.net,
        f"{name}_r": trades.r,
        f"{name}_signal": trades.signal,
        f"{name}_entry_ms": trades.entry_ms,
        f"{name}_returns": bar_returns(equity),
        f"{name}_held": np.asarray(sum(int(r.in_position.sum()) for r in results)),
    }
    if name == "model":
        out["timestamp_ms"] = times
    return out


def random_segments(
    bars: list, decisions: list, *, costs: Costs, short: bool, draws: int, seed: int
) -> np.ndarray:
    """(draws, fields) `Segment`s of the random-entry baseline's draws, drawn as
    `trading.baselines.baselines` draws them (same seed, same order: the same draws)."""
    rng = np.random.default_rng(seed)
    n_bars = sum(len(b) for b in bars)
    rows = []
    for _ in range(draws):
        arrays = _strategy_arrays("x", bars, random_decisions(decisions, rng), costs, short)
        rows.append(
            Segment.of(
                arrays["x_net"], arrays["x_r"], arrays["x_returns"],
                held=int(arrays["x_held"]), symbol_bars=n_bars,
            ).to_array()
        )  # fmt: skip
    return np.asarray(rows, np.float64).reshape(draws, len(Segment().to_array()))


def judge_period(
    checkpoint: Path,
    data_dir: Path,
    from_ms: int,
    to_ms: int,
    *,
    costs: Costs,
    short_stops: bool,
    draws: int,
    seed: int,
    device: Any = "cpu",
    batch_size: int = 512,
) -> PeriodResult:
    """The checkpoint on the windows and bars of [from_ms, to_ms) of `data_dir`.

    Raises `UserError` when the period holds no bar or no window, and the errors of
    `Predictor.load` / `open_lake` (a checkpoint without its sidecar, a lake that does
    not fit it).
    """
    from src.modelling.prediction.from_lake import open_lake
    from src.modelling.prediction.predictor import Predictor
    from src.modelling.trading.lake_bars import symbol_bars

    predictor = Predictor.load(checkpoint, device=device, batch_size=batch_size)
    index = open_lake(predictor, Path(data_dir), "walk-forward")
    where = f"--data-dir {data_dir}: the period {iso(from_ms)} to {iso(to_ms)}"
    bars = list(symbol_bars(index, from_ms=from_ms, to_ms=to_ms))
    if not bars:
        raise UserError(f"{where} has no bars; use fewer --folds")
    preds = period_predictions(predictor, index, from_ms, to_ms)
    n_classes = len(predictor.class_names)
    cm_decision = np.zeros((n_classes, n_classes), np.int64)
    cm_argmax = np.zeros_like(cm_decision)
    decisions = []
    for b in bars:
        ts, argmax, decision = preds.get(
            b.symbol, (np.zeros(0, np.int64),) + (np.zeros(0, np.int8),) * 2
        )
        decisions.append(align_decisions(b, ts, decision))
        y = b.label[np.searchsorted(b.timestamp, ts)]
        cm_decision += confusion_matrix(y, decision, n_classes)
        cm_argmax += confusion_matrix(y, argmax, n_classes)
    if not cm_decision.sum():
        raise UserError(f"{where} ends no window; use fewer --folds")
    report = backtest(
        bars, decisions, costs=costs, short_stops=short_stops, bar_ms=index.bar_ms,
        draws=draws, seed=seed,
    )  # fmt: skip
    report.pop("equity")
    longs = [np.full(len(b), LONG, np.int8) for b in bars]
    perfect = [np.where(np.isin(b.label, (STOP, LONG, SUPERLONG)), b.label, NEUTRO) for b in bars]
    arrays: dict[str, np.ndarray] = {
        "confusion_decision": cm_decision,
        "confusion_argmax": cm_argmax,
        "symbol_bars": np.asarray(sum(len(b) for b in bars)),
        "bar_ms": np.asarray(index.bar_ms),
    }
    for name, chosen in zip(KEPT, (decisions, longs, perfect), strict=True):
        arrays.update(_strategy_arrays(name, bars, chosen, costs, short_stops))
    arrays["random_segments"] = random_segments(
        bars, decisions, costs=costs, short=short_stops, draws=draws, seed=seed
    )
    summary = {
        "windows": int(cm_decision.sum()),
        "bars": int(arrays["symbol_bars"]),
        "symbols": [b.symbol for b in bars],
        "metrics": {
            "decision": classification(cm_decision, predictor.class_names),
            "argmax": classification(cm_argmax, predictor.class_names),
        },
        "backtest": report,
    }
    return PeriodResult(summary, arrays)
