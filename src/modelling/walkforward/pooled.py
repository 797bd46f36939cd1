"""Pooling the folds' out-of-sample results into one (pure numpy).

The K test periods are consecutive, so pooled they are one out-of-sample period:

- classification: the folds' confusion matrices summed, every metric from the sum
  (`evaluation.metrics`; exact, as for ranks);
- trading: the statistics of `trading.metrics` over all folds' trades (hit rate,
  expectancy, mean R, profit factor) and over the folds' portfolio bar returns
  concatenated in time (total return, Sharpe, max drawdown), so the stitched equity is
  the product of the folds' equity curves; exposure is the held symbol-bars over all
  symbol-bars;
- the random-entry baseline, whose draws are too many to keep as arrays: each draw of
  each fold is reduced to a `Segment` of sufficient statistics, a draw's folds are
  joined in time order (an associative join, exact up to float rounding), and the
  pooled draws are averaged as `trading.baselines` averages one period's.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import astuple, dataclass
from typing import Any

import numpy as np

from src.core.constants import CLASS_NAMES
from src.modelling.evaluation import metrics as M
from src.modelling.trading.baselines import AVERAGED as BASELINE_AVERAGED
from src.modelling.trading.engine import Trades
from src.modelling.trading.metrics import MS_PER_YEAR, max_drawdown, sharpe_ratio, trade_stats

#: The statistics averaged over random draws: those of `trading.baselines`, but the
#: turnover (not pooled across folds).
AVERAGED = tuple(k for k in BASELINE_AVERAGED if k != "turnover")


def classification(cm: np.ndarray, class_names: Sequence[str] = CLASS_NAMES) -> dict[str, Any]:
    """The metrics of a confusion matrix (counts[true, predicted]) as JSON values."""
    cm = np.asarray(cm, np.int64)
    pc = M.per_class(cm)
    return {
        "n": int(cm.sum()),
        "macro_f1": M.macro_f1(cm),
        "balanced_accuracy": M.balanced_accuracy(cm),
        "accuracy": M.accuracy(cm),
        "per_class": {
            name: {
                "precision": float(pc["precision"][i]),
                "recall": float(pc["recall"][i]),
                "f1": float(pc["f1"][i]),
                "support": int(pc["support"][i]),
            }
            for i, name in enumerate(class_names)
        },
        "confusion_matrix": cm.tolist(),
    }


def bar_returns(equity: np.ndarray) -> np.ndarray:
    """Bar returns of an equity curve that starts from 1 before its first bar."""
    equity = np.asarray(equity, np.float64)
    return equity / np.concatenate(([1.0], equity[:-1])) - 1.0


def trading_stats(
    net: np.ndarray,
    r: np.ndarray,
    returns: np.ndarray,
    *,
    held: int,
    symbol_bars: int,
    bar_ms: int,
) -> dict[str, Any]:
    """`trading.metrics`' statistics of trades (net returns, R multiples) and of the
    portfolio's bar returns in time order (equity = their cumulative product)."""
    equity = np.cumprod(1.0 + np.asarray(returns, np.float64))
    sharpe = sharpe_ratio(np.asarray(returns, np.float64), bar_ms)
    return {
        **trade_stats(Trades(net=np.asarray(net, np.float64), r=np.asarray(r, np.float64))),
        "total_return": float(equity[-1] - 1.0) if equity.size else 0.0,
        "sharpe": None if sharpe is None or not math.isfinite(sharpe) else sharpe,
        "max_drawdown": max_drawdown(equity),
        "exposure": held / symbol_bars if symbol_bars else 0.0,
    }


@dataclass(frozen=True)
class Segment:
    """Sufficient statistics of a period's trades and bar returns, for pooling without
    the arrays. `join` (this period, then `later`) is associative; `Segment()` is its
    identity (an empty period)."""

    n_trades: float = 0
    wins: float = 0
    """Trades with a positive net return."""
    sum_net: float = 0.0
    n_r: float = 0
    """Trades with a finite R multiple."""
    sum_r: float = 0.0
    gains: float = 0.0
    losses: float = 0.0
    """Sum of the losing trades' net returns, made positive."""
    n_bars: float = 0
    mean_ret: float = 0.0
    m2_ret: float = 0.0
    """Sum of squared deviations of the bar returns from their mean (Chan et al.)."""
    end: float = 1.0
    """Equity at the period's end (starting from 1)."""
    peak: float = 1.0
    """Largest equity, the start's 1 included."""
    trough: float = math.inf
    """Smallest equity over the period's bars."""
    max_drawdown: float = 0.0
    held: float = 0
    symbol_bars: float = 0

    @classmethod
    def of(
        cls, net: np.ndarray, r: np.ndarray, returns: np.ndarray, *, held: int, symbol_bars: int
    ) -> Segment:
        net, r = np.asarray(net, np.float64), np.asarray(r, np.float64)
        returns = np.asarray(returns, np.float64)
        equity = np.cumprod(1.0 + returns)
        finite_r = r[np.isfinite(r)]
        n = returns.size
        mean = float(returns.mean()) if n else 0.0
        return cls(
            n_trades=net.size,
            wins=int((net > 0).sum()),
            sum_net=float(net.sum()),
            n_r=finite_r.size,
            sum_r=float(finite_r.sum()),
            gains=float(net[net > 0].sum()),
            losses=float(-net[net < 0].sum()),
            n_bars=n,
            mean_ret=mean,
            m2_ret=float(((returns - mean) ** 2).sum()),
            end=float(equity[-1]) if n else 1.0,
            peak=max(1.0, float(equity.max())) if n else 1.0,
            trough=float(equity.min()) if n else math.inf,
            max_drawdown=max_drawdown(equity),
            held=held,
            symbol_bars=symbol_bars,
        )

    def join(self, later: Segment) -> Segment:
        """This period followed by `later` (whose equity continues from this `end`)."""
        a, b = self, later
        n = a.n_bars + b.n_bars
        delta = b.mean_ret - a.mean_ret
        mean = a.mean_ret + delta * b.n_bars / n if n else 0.0
        m2 = a.m2_ret + b.m2_ret + (delta**2 * a.n_bars * b.n_bars / n if n else 0.0)
        # A drawdown in `later` measured from this period's peak: 1 - end x trough / peak.
        across = 1.0 - a.end * b.trough / a.peak if math.isfinite(b.trough) else 0.0
        return Segment(
            n_trades=a.n_trades + b.n_trades,
            wins=a.wins + b.wins,
            sum_net=a.sum_net + b.sum_net,
            n_r=a.n_r + b.n_r,
            sum_r=a.sum_r + b.sum_r,
            gains=a.gains + b.gains,
            losses=a.losses + b.losses,
            n_bars=n,
            mean_ret=mean,
            m2_ret=m2,
            end=a.end * b.end,
            peak=max(a.peak, a.end * b.peak),
            trough=min(a.trough, a.end * b.trough),
            max_drawdown=max(a.max_drawdown, b.max_drawdown, across),
            held=a.held + b.held,
            symbol_bars=a.symbol_bars + b.symbol_bars,
        )

    def stats(self, bar_ms: int) -> dict[str, Any]:
        """The statistics `trading_stats` gives for the same trades and returns."""
        n = int(self.n_trades)
        sd = math.sqrt(self.m2_ret / (self.n_bars - 1)) if self.n_bars >= 2 else 0.0
        sharpe = (
            self.mean_ret / sd * math.sqrt(MS_PER_YEAR / bar_ms)
            if sd > 0 and math.isfinite(sd)
            else None
        )
        return {
            "n_trades": n,
            "hit_rate": self.wins / n if n else None,
            "expectancy_bps": self.sum_net / n * 1e4 if n else None,
            "mean_r": self.sum_r / self.n_r if self.n_r else None,
            "profit_factor": self.gains / self.losses if self.losses > 0 else None,
            "total_return": self.end - 1.0,
            "sharpe": sharpe,
            "max_drawdown": self.max_drawdown,
            "exposure": self.held / self.symbol_bars if self.symbol_bars else 0.0,
        }

    def to_array(self) -> np.ndarray:
        return np.asarray(astuple(self), np.float64)

    @classmethod
    def from_array(cls, values: np.ndarray) -> Segment:
        return cls(*(float(v) for v in values))


def join_all(segments: Sequence[Segment]) -> Segment:
    out = Segment()
    for s in segments:
        out = out.join(s)
    return out


def average_draws(draws: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean of each statistic over draws (None where no draw had it), with the spread
    of the expectancy and the Sharpe ratio across draws (`*_sd`, ddof 1)."""
    out: dict[str, Any] = {"draws": len(draws)}
    for key in AVERAGED:
        values = [d[key] for d in draws if d.get(key) is not None]
        out[key] = float(np.mean(values)) if values else None
    for key in ("expectancy_bps", "sharpe"):
        values = [d[key] for d in draws if d.get(key) is not None]
        out[f"{key}_sd"] = float(np.std(values, ddof=1)) if len(values) > 1 else None
    return out


def pooled_random(per_fold: Sequence[np.ndarray], bar_ms: int) -> dict[str, Any]:
    """The random-entry baseline pooled: `per_fold[k]` is fold k's (draws, fields)
    array of `Segment`s; draw d of every fold joined in time order, then averaged."""
    if not per_fold or any(len(a) != len(per_fold[0]) for a in per_fold):
        return {}
    draws = [
        join_all([Segment.from_array(a[d]) for a in per_fold]).stats(bar_ms)
        for d in range(len(per_fold[0]))
    ]
    return average_draws(draws) if draws else {}
