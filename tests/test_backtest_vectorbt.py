"""The backtest against an independent backtester: vectorbt's `Portfolio.from_signals`.

The rules are made the same: entries at the signal bar's close with all the capital,
one position at a time (vectorbt ignores entries while in a position); a stop-loss
and a take-profit as fractions of the entry close (`sl_stop`, `tp_stop`, checked from
the next bar on its high and low, both filled as stop-market orders with slippage:
`stop_exit_price="stopmarket"`); the vertical barrier as an exit signal at the close
of the horizon's last bar (a small numba signal function holds the open position's
entry bar); fees and slippage per side. Data without gaps, opens at the previous
close (so no bar opens beyond a barrier). Compared: every trade's entry and exit bar,
and its return on the capital it used, within 1e-9.
"""

from __future__ import annotations

import numpy as np
import pytest

vbt = pytest.importorskip("vectorbt")
numba = pytest.importorskip("numba")

from src.data.labels import barrier_trades  # noqa: E402
from src.modelling.trading.engine import (  # noqa: E402
    LONG,
    NEUTRO,
    SUPERLONG,
    Costs,
    SymbolBars,
    simulate_symbol,
)

MIN = 60_000
H = 30  # bars in the horizon
U1, U2, L = 0.004, 0.008, 0.004


@numba.njit
def _horizon_exit(c, entries, horizon_bar, state):  # pragma: no cover - numba
    """Long entry on `entries`; exit at the close of the entry's horizon bar.
    state[0]: the open position's entry bar."""
    if c.position_now > 0:
        if c.i >= horizon_bar[state[0]]:
            return False, True, False, False
        return False, False, False, False
    if entries[c.i]:
        state[0] = c.i
        return True, False, False, False
    return False, False, False, False


def candles(n: int, seed: int):
    rng = np.random.default_rng(seed)
    close = 100 * np.exp(np.cumsum(rng.standard_normal(n) * 0.002))
    open_ = np.concatenate(([100.0], close[:-1]))
    high = np.maximum(open_, close) * np.exp(rng.exponential(0.001, n))
    low = np.minimum(open_, close) * np.exp(-rng.exponential(0.001, n))
    return open_, high, low, close


@pytest.mark.parametrize(("seed", "fee_bps", "slippage_bps"), [(0, 10.0, 5.0), (1, 0.0, 0.0)])
def test_trades_equal_vectorbt_from_signals(seed, fee_bps, slippage_bps):
    n = 5000
    open_, high, low, close = candles(n, seed)
    ts = np.arange(n, dtype=np.int64) * MIN
    trades = barrier_trades(
        ts, open_, high, low, close, horizon_ms=H * MIN, upper1=U1, upper2=U2, lower=L
    )
    m = trades.exit_bar["long"].size
    rng = np.random.default_rng(seed + 10)
    decisions = np.full(m, NEUTRO, np.int8)
    draw = rng.random(m)
    decisions[draw < 0.03] = LONG
    decisions[(draw >= 0.03) & (draw < 0.05)] = SUPERLONG
    bars = SymbolBars(
        "X",
        ts[:m],
        close[:m],
        np.zeros(m, np.int8),
        {k: ts[v] for k, v in trades.exit_bar.items()},
        trades.gross_return,
        trades.risk,
    )
    ours = simulate_symbol(
        bars, decisions, costs=Costs(fee_bps=fee_bps, slippage_bps=slippage_bps)
    ).trades

    entries = np.zeros(n, np.bool_)
    entries[:m] = decisions != NEUTRO
    horizon_bar = np.arange(n, dtype=np.int64) + H  # no gaps: H bars after the entry
    tp = np.full(n, np.nan)
    tp[:m] = np.where(decisions == SUPERLONG, U2, U1)
    pf = vbt.Portfolio.from_signals(
        close,
        signal_func_nb=_horizon_exit,
        signal_args=(entries, horizon_bar, np.zeros(1, np.int64)),
        open=open_,
        high=high,
        low=low,
        sl_stop=L,
        tp_stop=tp,
        stop_exit_price="stopmarket",
        fees=fee_bps / 1e4,
        slippage=slippage_bps / 1e4,
        init_cash=1.0,
        size=np.inf,
    )
    rec = pf.trades.records
    assert len(rec) == len(ours) > 100
    np.testing.assert_array_equal(rec["entry_idx"].to_numpy(), ours.entry_bar)
    np.testing.assert_array_equal(ts[rec["exit_idx"].to_numpy()], ours.exit_ms)
    used = rec["size"] * rec["entry_price"] + rec["entry_fees"]  # the capital the trade used
    np.testing.assert_allclose((rec["pnl"] / used).to_numpy(), ours.net, rtol=0, atol=1e-9)
    # Compounded, the account ends where vectorbt's does.
    assert np.prod(1 + ours.net) == pytest.approx(float(pf.value().iloc[-1]), abs=1e-9)
