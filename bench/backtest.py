"""Speed of the backtest beside vectorbt's `Portfolio.from_signals` on the same input.

    python -m bench.backtest                       # 4 symbols x 1M one-minute bars, 3 rounds
    python -m bench.backtest --symbols 2 --bars 200000 --rounds 1

Input, built once in memory (not timed): random-walk candles per symbol (opens at the
previous close), their trades at fixed barriers (+0.4% / +0.8% / -0.4%, a 30-bar
horizon, `labels.barrier_trades`, as `prepare` stores them in the lake) and random
decisions at a model-like rate (3% Long, 2% SuperLong). Timed: ours = the trading of
every symbol (`simulate_symbol`: one position at a time, costs, bar-level marking)
plus the portfolio statistics (`summarize`); vectorbt = `from_signals` with the same
rules (stops as fractions of the entry close, a numba signal function for the
horizon exit, fees and slippage; a starting cash of 1e100, so that 40,000 costly trades
never shrink an account below vectorbt's smallest order; its numba compilation is done
by an untimed warm-up run) plus its trade records and portfolio value. Both give the
same trades (the bench checks the counts; tests/test_backtest_vectorbt.py checks
every trade).
Bars/s = symbols x bars / median seconds; vectorbt needs the `bench` extra.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

MIN = 60_000
H = 30
U1, U2, L = 0.004, 0.008, 0.004


def build(n_symbols: int, n_bars: int, seed: int = 0) -> list[dict]:
    from src.data.labels import barrier_trades

    out = []
    for s in range(n_symbols):
        rng = np.random.default_rng(seed + s)
        close = 100 * np.exp(np.cumsum(rng.standard_normal(n_bars) * 0.002))
        open_ = np.concatenate(([100.0], close[:-1]))
        high = np.maximum(open_, close) * np.exp(rng.exponential(0.001, n_bars))
        low = np.minimum(open_, close) * np.exp(-rng.exponential(0.001, n_bars))
        ts = np.arange(n_bars, dtype=np.int64) * MIN
        tr = barrier_trades(
            ts, open_, high, low, close, horizon_ms=H * MIN, upper1=U1, upper2=U2, lower=L
        )
        m = tr.exit_bar["long"].size
        draw = rng.random(m)
        decisions = np.zeros(m, np.int8)
        decisions[draw < 0.03] = 2
        decisions[(draw >= 0.03) & (draw < 0.05)] = 3
        out.append(
            dict(
                ts=ts,
                open=open_,
                high=high,
                low=low,
                close=close,
                trades=tr,
                m=m,
                decisions=decisions,
            )
        )
    return out


def run_ours(data: list[dict], fee_bps: float, slippage_bps: float) -> int:
    from src.modelling.trading.engine import Costs, SymbolBars, simulate_symbol
    from src.modelling.trading.metrics import summarize

    costs = Costs(fee_bps=fee_bps, slippage_bps=slippage_bps)
    bars, results = [], []
    for d in data:
        m, tr, ts = d["m"], d["trades"], d["ts"]
        b = SymbolBars(
            "X", ts[:m], d["close"][:m], np.zeros(m, np.int8),
            {k: ts[v] for k, v in tr.exit_bar.items()}, tr.gross_return, tr.risk,
        )  # fmt: skip
        bars.append(b)
        results.append(simulate_symbol(b, d["decisions"], costs=costs))
    summary = summarize(bars, results, bar_ms=MIN)
    return int(summary["n_trades"])


def _signal_func():
    from numba import njit

    @njit
    def horizon_exit(c, entries, horizon_bar, state):  # pragma: no cover - numba
        if c.position_now > 0:
            if c.i >= horizon_bar[c.col, state[c.col]]:
                return False, True, False, False
            return False, False, False, False
        if entries[c.i, c.col]:
            state[c.col] = c.i
            return True, False, False, False
        return False, False, False, False

    return horizon_exit


def run_vectorbt(data: list[dict], fee_bps: float, slippage_bps: float, func) -> int:
    import vectorbt as vbt

    n = data[0]["close"].size
    cols = len(data)
    stack = lambda key: np.column_stack([d[key] for d in data])  # noqa: E731
    entries = np.zeros((n, cols), np.bool_)
    tp = np.full((n, cols), np.nan)
    for j, d in enumerate(data):
        entries[: d["m"], j] = d["decisions"] != 0
        tp[: d["m"], j] = np.where(d["decisions"] == 3, U2, U1)
    horizon_bar = np.tile(np.arange(n, dtype=np.int64) + H, (cols, 1))
    pf = vbt.Portfolio.from_signals(
        stack("close"),
        signal_func_nb=func,
        signal_args=(entries, horizon_bar, np.zeros(cols, np.int64)),
        open=stack("open"), high=stack("high"), low=stack("low"),
        sl_stop=L, tp_stop=tp, stop_exit_price="stopmarket",
        fees=fee_bps / 1e4, slippage=slippage_bps / 1e4, init_cash=1e100, size=np.inf,
    )  # fmt: skip
    pf.value()
    return int(len(pf.trades.records))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--symbols", type=int, default=4)
    p.add_argument("--bars", type=int, default=1_000_000)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--fee-bps", type=float, default=4.0)
    p.add_argument("--slippage-bps", type=float, default=2.0)
    args = p.parse_args()
    data = build(args.symbols, args.bars)
    total = args.symbols * args.bars
    contenders = {"ours": lambda: run_ours(data, args.fee_bps, args.slippage_bps)}
    try:
        func = _signal_func()
        # numba compilation, untimed: the same shapes' types as the timed runs
        run_vectorbt(build(args.symbols, 2000, seed=99), args.fee_bps, args.slippage_bps, func)
        contenders["vectorbt from_signals"] = lambda: run_vectorbt(
            data, args.fee_bps, args.slippage_bps, func
        )
    except ImportError:
        print("vectorbt is not installed (pip install -e '.[bench]'): ours only")
    times: dict[str, list[float]] = {k: [] for k in contenders}
    trades: dict[str, int] = {}
    for _ in range(args.rounds):
        for name, fn in contenders.items():  # interleaved: both see the same machine
            started = time.perf_counter()
            trades[name] = fn()
            times[name].append(time.perf_counter() - started)
    print(
        f"{args.symbols} symbols x {args.bars:,} bars, {args.rounds} rounds, fees "
        f"{args.fee_bps:g} + slippage {args.slippage_bps:g} bps per side\n"
    )
    print("| contender | trades | median s | bars/s | ratio to vectorbt |")
    print("|---|---:|---:|---:|---:|")
    ref = statistics.median(times.get("vectorbt from_signals", times["ours"]))
    for name, ts in times.items():
        med = statistics.median(ts)
        print(f"| {name} | {trades[name]:,} | {med:.2f} | {total / med:,.0f} | {ref / med:.2f} |")
    if "vectorbt from_signals" in trades:
        same = trades["ours"] == trades["vectorbt from_signals"]
        print(f"\nsame trade count: {'yes' if same else 'NO'}")
        verdict = "met" if statistics.median(times["ours"]) <= ref else "missed"
        print(f"target: at least as fast as vectorbt's from_signals: {verdict}")


if __name__ == "__main__":
    main()
