"""Backtest statistics from trades and bar returns, in pure numpy.

Definitions (per trade: its net simple return; per bar: the portfolio's return):
- `hit_rate`: share of trades with a positive net return;
- `expectancy_bps`: mean net return per trade, in basis points;
- `mean_r`: mean net return in units of each trade's risk (stop distance), R multiples;
- `profit_factor`: gross profits / gross losses of the trades (None without a loss);
- `total_return`: the portfolio's compounded return over the period;
- `sharpe`: mean / standard deviation of the portfolio's bar returns, times the square
  root of bars per year (365.25 days: crypto trades every day; None when flat);
- `max_drawdown`: largest fall of the portfolio's equity from a previous peak (0..1);
- `exposure`: share of symbol-bars holding a position;
- `turnover`: capital traded per year, in multiples of the capital (a round trip of a
  fully invested sub-account trades its capital twice).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from src.modelling.trading.engine import LONG, STOP, SUPERLONG, SymbolBars, SymbolResult, Trades

MS_PER_YEAR = 365.25 * 86_400_000


def concat_trades(results: list[SymbolResult]) -> Trades:
    """All symbols' trades in one `Trades`."""
    if not results:
        return Trades()
    parts = [r.trades for r in results]
    return Trades(
        symbol=[s for t in parts for s in t.symbol],
        entry_bar=np.concatenate([t.entry_bar for t in parts]),
        entry_ms=np.concatenate([t.entry_ms for t in parts]),
        exit_ms=np.concatenate([t.exit_ms for t in parts]),
        signal=np.concatenate([t.signal for t in parts]),
        gross=np.concatenate([t.gross for t in parts]),
        net=np.concatenate([t.net for t in parts]),
        r=np.concatenate([t.r for t in parts]),
    )


def union_of_sorted(arrays: list[np.ndarray]) -> np.ndarray:
    """The sorted distinct values of sorted int64 arrays (symbols usually share their
    bar times: then no sort at all)."""
    first = arrays[0]
    if all(a.shape == first.shape and np.array_equal(a, first) for a in arrays[1:]):
        return first
    merged = np.sort(np.concatenate(arrays), kind="stable")
    return merged[np.concatenate(([True], merged[1:] != merged[:-1]))]


def portfolio_equity(
    bars: list[SymbolBars], results: list[SymbolResult]
) -> tuple[np.ndarray, np.ndarray]:
    """(timestamps, equity): the union of the symbols' bar times and the mean of their
    sub-accounts' equity (each starting at 1, carried forward between its bars)."""
    if not bars:
        return np.zeros(0, np.int64), np.zeros(0)
    times = union_of_sorted([b.timestamp for b in bars])
    total = np.zeros(times.size)
    for b, r in zip(bars, results, strict=True):
        equity = np.cumprod(1.0 + r.bar_returns)
        at = np.searchsorted(b.timestamp, times, side="right") - 1  # last bar at or before
        total += np.where(at >= 0, equity[np.maximum(at, 0)], 1.0)
    return times, total / len(bars)


def max_drawdown(equity: np.ndarray) -> float:
    if equity.size == 0:
        return 0.0
    peak = np.maximum.accumulate(np.maximum(equity, 1.0))
    return float(np.max(1.0 - equity / peak))


def sharpe_ratio(returns: np.ndarray, bar_ms: int) -> float | None:
    """Annualised Sharpe ratio of bar returns (no risk-free rate), None when flat."""
    if returns.size < 2:
        return None
    sd = float(np.std(returns, ddof=1))
    if sd == 0 or not math.isfinite(sd):
        return None
    return float(np.mean(returns) / sd * math.sqrt(MS_PER_YEAR / bar_ms))


def trade_stats(trades: Trades) -> dict[str, Any]:
    """hit_rate, expectancy_bps, mean_r and profit_factor of a set of trades."""
    net = trades.net
    n = int(net.size)
    gains, losses = float(net[net > 0].sum()), float(-net[net < 0].sum())
    r = trades.r[np.isfinite(trades.r)]
    return {
        "n_trades": n,
        "hit_rate": float(np.mean(net > 0)) if n else None,
        "expectancy_bps": float(net.mean() * 1e4) if n else None,
        "mean_r": float(r.mean()) if r.size else None,
        "profit_factor": gains / losses if losses > 0 else None,
    }


def summarize(
    bars: list[SymbolBars], results: list[SymbolResult], *, bar_ms: int
) -> dict[str, Any]:
    """Every statistic of the module docstring, plus skipped signals and statistics
    per signal; `equity` ({"timestamp_ms", "equity"}) for the curve."""
    trades = concat_trades(results)
    times, equity = portfolio_equity(bars, results)
    returns = np.diff(np.concatenate(([1.0], equity))) / np.concatenate(([1.0], equity[:-1]))
    span_ms = max(float(times[-1] - times[0]) + bar_ms, bar_ms) if times.size else bar_ms
    years = span_ms / MS_PER_YEAR
    symbol_bars = sum(len(b) for b in bars)
    held = sum(int(r.in_position.sum()) for r in results)
    per_signal = {}
    for signal, name in ((LONG, "Long"), (SUPERLONG, "SuperLong"), (STOP, "Stop")):
        signals = sum(r.signals.get(signal, 0) for r in results)
        if not signals:
            continue
        sel = trades.signal == signal
        sub = Trades(net=trades.net[sel], r=trades.r[sel])
        per_signal[name] = {
            "signals": signals,
            "skipped": sum(r.skipped.get(signal, 0) for r in results),
            **trade_stats(sub),
        }
    return {
        **trade_stats(trades),
        "total_return": float(equity[-1] - 1.0) if equity.size else 0.0,
        "sharpe": sharpe_ratio(returns, bar_ms),
        "max_drawdown": max_drawdown(equity),
        "exposure": held / symbol_bars if symbol_bars else 0.0,
        "turnover": 2.0 * trades.net.size / max(len(bars), 1) / years if years > 0 else None,
        "skipped_signals": sum(sum(r.skipped.values()) for r in results),
        "per_signal": per_signal,
        "equity": {"timestamp_ms": times, "equity": equity},
    }
