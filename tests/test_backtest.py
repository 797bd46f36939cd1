"""The backtest's accounting: a hand-computed example on 30 bars, and the trades'
exits against the labels' own barriers."""

from __future__ import annotations

import numpy as np
import pytest

from src.modelling.trading.engine import (
    LONG,
    NEUTRO,
    STOP,
    SUPERLONG,
    Costs,
    SymbolBars,
    net_returns,
    simulate_symbol,
    take_trades,
)
from src.modelling.trading.metrics import max_drawdown, summarize

MIN = 60_000
N = 30


def hand_bars() -> SymbolBars:
    ts = np.arange(N, dtype=np.int64) * MIN
    close = 100.0 + 0.1 * np.arange(N)
    exit_ms = {k: ts + MIN for k in ("long", "superlong", "short")}
    gross = {k: np.zeros(N) for k in exit_ms}
    risk = {"long": np.full(N, 0.0075), "superlong": np.full(N, 0.0075), "short": np.full(N, 0.008)}
    exit_ms["long"][2], gross["long"][2] = ts[5], 0.008  # take profit at U1
    exit_ms["long"][4], gross["long"][4] = ts[7], 0.008  # would be, but bar 4 is skipped
    exit_ms["superlong"][6], gross["superlong"][6] = ts[9], -0.0075  # stopped
    exit_ms["short"][10], gross["short"][10] = ts[12], 0.0075  # short takes profit at L
    return SymbolBars("ABC", ts, close, np.zeros(N, np.int8), exit_ms, gross, risk)


def decisions() -> np.ndarray:
    d = np.full(N, NEUTRO, np.int8)
    d[2], d[4], d[5], d[6], d[10] = LONG, LONG, LONG, SUPERLONG, STOP
    return d


def long_cash(gross: float, s: float, f: float) -> float:
    """Cash accounting of a long with 1 unit of capital: buy at p0 (1 + s) plus the fee,
    sell at p1 (1 - s) less the fee."""
    p0, p1 = 100.0, 100.0 * (1 + gross)
    units = 1.0 / (p0 * (1 + s) * (1 + f))
    return units * p1 * (1 - s) * (1 - f) - 1.0


def short_cash(gross: float, s: float, f: float) -> float:
    """A short whose sale brings in 1 unit: sell at p0 (1 - s) less the fee, buy back at
    p1 (1 + s) plus the fee."""
    p0, p1 = 100.0, 100.0 * (1 - gross)
    units = 1.0 / (p0 * (1 - s) * (1 - f))
    return 1.0 - units * p1 * (1 + s) * (1 + f)


def test_hand_computed_trades_fees_slippage_and_skips():
    costs = Costs(fee_bps=10, slippage_bps=5)
    s, f = 5e-4, 1e-3
    out = simulate_symbol(hand_bars(), decisions(), costs=costs, short_stops=True)
    t = out.trades
    # Bar 4's Long came while bar 2's was open, bar 5's on the bar it exited on.
    assert t.entry_bar.tolist() == [2, 6, 10]
    assert t.exit_ms.tolist() == [5 * MIN, 9 * MIN, 12 * MIN]
    assert t.signal.tolist() == [LONG, SUPERLONG, STOP]
    expected = [long_cash(0.008, s, f), long_cash(-0.0075, s, f), short_cash(0.0075, s, f)]
    np.testing.assert_allclose(t.net, expected, rtol=0, atol=1e-12)
    np.testing.assert_allclose(t.r, np.array(expected) / [0.0075, 0.0075, 0.008], atol=1e-12)
    assert out.signals == {STOP: 1, LONG: 3, SUPERLONG: 1}
    assert out.skipped == {STOP: 0, LONG: 2, SUPERLONG: 0}
    # The bars of each trade compound to its net return; the account is flat elsewhere.
    equity = np.cumprod(1 + out.bar_returns)
    assert equity[-1] == pytest.approx(np.prod(1 + np.array(expected)), abs=1e-12)
    held = np.flatnonzero(out.in_position).tolist()
    assert held == [2, 3, 4, 6, 7, 8, 10, 11]
    assert (out.bar_returns[[0, 1, 2, 13, 20]] == 0).all()
    # Inside the first trade the value follows the close: bar 3 = 100.3 / 100.2.
    assert out.bar_returns[3] == pytest.approx(100.3 / 100.2 - 1, abs=1e-12)

    summary = summarize([hand_bars()], [out], bar_ms=MIN)
    assert summary["n_trades"] == 3 and summary["skipped_signals"] == 2
    assert summary["hit_rate"] == pytest.approx(2 / 3)
    assert summary["expectancy_bps"] == pytest.approx(np.mean(expected) * 1e4, abs=1e-9)
    gains = expected[0] + expected[2]
    assert summary["profit_factor"] == pytest.approx(gains / -expected[1])
    assert summary["total_return"] == pytest.approx(np.prod(1 + np.array(expected)) - 1, abs=1e-12)
    assert summary["exposure"] == pytest.approx(8 / 30)
    assert summary["per_signal"]["Long"] == {
        "signals": 3,
        "skipped": 2,
        "n_trades": 1,
        "hit_rate": 1.0,
        "expectancy_bps": pytest.approx(expected[0] * 1e4),
        "mean_r": pytest.approx(expected[0] / 0.0075),
        "profit_factor": None,
    }


def test_stops_stay_flat_without_short_stops_and_costs_zero_is_gross():
    out = simulate_symbol(hand_bars(), decisions(), costs=Costs(), short_stops=False)
    assert out.trades.entry_bar.tolist() == [2, 6]
    np.testing.assert_allclose(out.trades.net, [0.008, -0.0075], atol=1e-15)
    assert out.signals[STOP] == 0


def test_the_next_position_opens_after_the_exit_bar():
    ts = np.arange(10, dtype=np.int64)
    exits = np.array([3, 4, 5, 9, 5, 9, 9, 9, 9, 9], np.int64)
    assert take_trades(ts, np.arange(10), exits).tolist() == [0, 4, 6]
    # An exit on its own entry bar (a horizon that held no bar) frees the next bar.
    assert take_trades(ts, np.arange(3), np.array([0, 1, 2])).tolist() == [0, 1, 2]


def test_net_returns_model():
    assert net_returns(np.array([0.01]), 1.0, Costs())[0] == pytest.approx(0.01)
    assert net_returns(np.array([0.01]), -1.0, Costs())[0] == pytest.approx(0.01)
    with pytest.raises(ValueError, match="--fee-bps"):
        Costs(fee_bps=-1)


def test_max_drawdown():
    assert max_drawdown(np.array([1.0, 1.2, 0.9, 1.3, 1.04])) == pytest.approx(0.25)
    assert max_drawdown(np.array([0.8, 1.0])) == pytest.approx(0.2)


def test_portfolio_times_are_the_union_of_the_symbols_bars():
    from src.modelling.trading.metrics import union_of_sorted

    a, b = np.array([1, 3, 5]), np.array([2, 3, 6])
    assert union_of_sorted([a, b]).tolist() == [1, 2, 3, 5, 6]
    assert union_of_sorted([a, a.copy()]).tolist() == [1, 3, 5]


def test_a_sharpe_ratio_of_zero_is_reported_as_zero_not_missing(monkeypatch):
    from src.modelling.trading import metrics

    assert metrics.sharpe_ratio(np.array([0.01, -0.01, 0.01, -0.01]), MIN) == 0.0
    assert metrics.sharpe_ratio(np.zeros(5), MIN) is None  # flat: no ratio
    monkeypatch.setattr(metrics, "sharpe_ratio", lambda returns, bar_ms: 0.0)
    out = simulate_symbol(hand_bars(), decisions(), costs=Costs())
    assert metrics.summarize([hand_bars()], [out], bar_ms=MIN)["sharpe"] == 0.0
