"""What a backtest is compared with: chance, buy-and-hold-like, and the ceiling.

- `random`: the model's own decisions, circularly shifted by a random offset (at least
  a tenth of the period): the same rate, class mix and clustering, at times unrelated
  to the market, with the same exits; averaged over `draws` seeded draws, with the
  spread across draws (`expectancy_bps_sd`, `sharpe_sd`). A model whose expectancy is
  inside that spread has not shown an edge in timing. (Entries drawn independently per
  bar would ignore that signals come in runs, and give a spread several times too
  narrow; the leakage canary's macro-F1 null is built the same way.)
- `always_long`: a Long signal on every bar (a long is open whenever possible).
- `perfect`: the true labels as decisions: the ceiling these barriers allow.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from src.modelling.trading.engine import (
    LONG,
    NEUTRO,
    STOP,
    SUPERLONG,
    Costs,
    SymbolBars,
    simulate_symbol,
)
from src.modelling.trading.metrics import summarize

DEFAULT_DRAWS = 200
#: The statistics averaged over the random draws.
AVERAGED = (
    "n_trades",
    "hit_rate",
    "expectancy_bps",
    "mean_r",
    "profit_factor",
    "total_return",
    "sharpe",
    "max_drawdown",
    "exposure",
    "turnover",
)


def run(
    bars: list[SymbolBars],
    decisions: list[np.ndarray],
    *,
    costs: Costs,
    short_stops: bool,
    bar_ms: int,
) -> dict[str, Any]:
    """`summarize` of trading `decisions` (one int array per symbol) on `bars`."""
    results = [
        simulate_symbol(b, d, costs=costs, short_stops=short_stops)
        for b, d in zip(bars, decisions, strict=True)
    ]
    return summarize(bars, results, bar_ms=bar_ms)


def random_decisions(decisions: list[np.ndarray], rng: np.random.Generator) -> list[np.ndarray]:
    """Each symbol's decisions rolled by a random offset in [n/10, n - n/10] bars."""
    out = []
    for d in decisions:
        d = np.asarray(d)
        n = d.size
        lo = n // 10
        shift = int(rng.integers(lo, max(n - lo, lo + 1))) if n > 1 else 0
        out.append(np.roll(d, shift))
    return out


def baselines(
    bars: list[SymbolBars],
    decisions: list[np.ndarray],
    *,
    costs: Costs,
    short_stops: bool,
    bar_ms: int,
    draws: int = DEFAULT_DRAWS,
    seed: int = 0,
) -> dict[str, dict[str, Any]]:
    """{"random", "always_long", "perfect"}: each with `summarize`'s statistics (the
    equity curve left out; `random` averaged, with `expectancy_bps_sd` and `draws`)."""
    kw = dict(costs=costs, short_stops=short_stops, bar_ms=bar_ms)
    out: dict[str, dict[str, Any]] = {}
    rng = np.random.default_rng(seed)
    runs = [run(bars, random_decisions(decisions, rng), **kw) for _ in range(draws)]
    out["random"] = _average(runs) if runs else {}
    longs = [np.full(len(b), LONG, np.int8) for b in bars]
    out["always_long"] = _without_curve(run(bars, longs, **kw))
    perfect = [np.where(np.isin(b.label, (STOP, LONG, SUPERLONG)), b.label, NEUTRO) for b in bars]
    out["perfect"] = _without_curve(run(bars, perfect, **kw))
    return out


def _without_curve(summary: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in summary.items() if k != "equity"}


def _average(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean of each statistic over the draws (None where a draw had none)."""
    out: dict[str, Any] = {"draws": len(runs)}
    for key in AVERAGED:
        values = [r[key] for r in runs if r.get(key) is not None]
        out[key] = float(np.mean(values)) if values else None
    for key in ("expectancy_bps", "sharpe"):
        values = [r[key] for r in runs if r[key] is not None]
        out[f"{key}_sd"] = float(np.std(values, ddof=1)) if len(values) > 1 else None
    return out
