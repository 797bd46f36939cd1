"""Hierarchical triple-barrier labels on a time-true horizon, in pure numpy.

Source: the triple-barrier method of López de Prado, *Advances in Financial Machine
Learning* (2018), ch. 3 (`getEvents` / `applyPtSlOnT1`): two horizontal barriers set
from the entry price and a vertical barrier at a fixed *time* after the entry. SAIMP's
variant has a second upper barrier, which splits the profitable outcomes in two.

For bar t with close c and open time ts[t], the bars whose open time lies in
(ts[t], ts[t] + horizon] are inspected. The horizon is a duration, not a count of bars:
when bars are missing (an exchange outage, quiet minutes without trades) fewer bars
fall inside it, and the vertical barrier stays at ts[t] + horizon. A bar is labelled
only when the series reaches its vertical barrier (ts[-1] >= ts[t] + horizon).

Barriers, as fractions of the close (per bar, so they may follow volatility):
    U1 = c * (1 + upper1), U2 = c * (1 + upper2), L = c * (1 - lower).
A barrier is touched by a bar when its high >= U (upper barriers) or its low <= L.
Inside a bar the order of high and low is unknown, so a tie is resolved for safety:
    Stop (1):      L is touched before U1, or in the same bar as U1.
    SuperLong (3): U1 is touched (and not Stop) and U2 is touched strictly before L
                   (U2 and L in the same bar is not SuperLong).
    Long (2):      U1 is touched, not Stop, not SuperLong.
    Neutro (0):    nothing is touched inside the horizon.

`decided_ms` is when the outcome became known: the open time of the bar whose touch
decided it, or the vertical barrier ts[t] + horizon. The loader's purge works on it, so
no label whose outcome lies in a later split is trained on.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from src.core.constants import TRADE_NAMES

NEUTRO, STOP, LONG, SUPERLONG = 0, 1, 2, 3


@dataclass(frozen=True)
class Labels:
    """Labels of the first m bars: those whose vertical barrier the series reaches."""

    label: np.ndarray
    """int8 class per bar, shape (m,)."""
    decided_at: np.ndarray
    """int64 index of the bar that decided the outcome: the touching bar, else the last
    bar inside the horizon (t <= decided_at; t itself when the horizon holds no bar)."""
    decided_ms: np.ndarray
    """int64 epoch ms when the outcome became known (see the module docstring)."""


def labelled_bars(timestamp_ms: np.ndarray, horizon_ms: int) -> int:
    """m: how many leading bars the series follows for a whole horizon."""
    ts = np.asarray(timestamp_ms, np.int64)
    if ts.size == 0:
        return 0
    return int(np.searchsorted(ts, ts[-1] - int(horizon_ms), side="right"))


def horizon_end_bar(timestamp_ms: np.ndarray, horizon_ms: int, m: int) -> np.ndarray:
    """Index of the last bar inside each of the first m bars' horizons, int64 (m,)."""
    ts = np.asarray(timestamp_ms, np.int64)
    return np.searchsorted(ts, ts[:m] + int(horizon_ms), side="right").astype(np.int64) - 1


def _first_touch(touched_at: np.ndarray, k: int, touched: np.ndarray) -> None:
    """Record offset k where `touched` is true and no earlier offset was recorded."""
    never = touched_at > k  # offsets are visited in increasing order
    touched_at[touched & never] = k


def _barrier(value: float | np.ndarray, m: int, name: str) -> np.ndarray:
    """A barrier distance as a float64 array of the m labelled bars."""
    arr = np.asarray(value, np.float64)
    if arr.ndim == 0:
        if not arr > 0:
            raise ValueError(f"{name} must be > 0, got {float(arr)}")
        return np.full(m, float(arr))
    if arr.shape[0] < m:
        raise ValueError(f"{name} has {arr.shape[0]} values for {m} labelled bars")
    return arr[:m]


@dataclass(frozen=True)
class _Touches:
    """First touch offsets (1..span; span + 1 or more: never) of the m labelled bars."""

    u1: np.ndarray
    u2: np.ndarray
    lo: np.ndarray
    span: np.ndarray
    """Bars inside each horizon, int64 (m,)."""
    u1_price: np.ndarray
    u2_price: np.ndarray
    lo_price: np.ndarray


def _first_touches(
    timestamp_ms: np.ndarray,
    high: np.ndarray,
    low: np.ndarray,
    close: np.ndarray,
    horizon_ms: int,
    upper1: float | np.ndarray,
    upper2: float | np.ndarray,
    lower: float | np.ndarray,
) -> _Touches | None:
    """The barrier prices and their first touches; None when no bar is labelled.

    Vectorised over bars; the loop runs over the bar offsets inside the longest horizon.
    """
    if horizon_ms < 1:
        raise ValueError(f"horizon_ms must be >= 1, got {horizon_ms}")
    ts = np.asarray(timestamp_ms, np.int64)
    close = np.asarray(close, dtype=np.float64)
    m = labelled_bars(ts, horizon_ms)
    u1_frac = _barrier(upper1, m, "upper1")
    u2_frac = _barrier(upper2, m, "upper2")
    lo_frac = _barrier(lower, m, "lower")
    if m == 0:
        return None

    span = horizon_end_bar(ts, horizon_ms, m) - np.arange(m)  # bars inside each horizon
    longest = int(span.max())
    # Pad so that every offset slice has m entries; the padding never touches anything.
    high = np.concatenate((np.asarray(high, np.float64), np.full(longest, -np.inf)))
    low = np.concatenate((np.asarray(low, np.float64), np.full(longest, np.inf)))

    base = close[:m]
    u1 = base * (1.0 + u1_frac)
    u2 = base * (1.0 + u2_frac)
    lo = base * (1.0 - lo_frac)

    never = longest + 1  # "not touched inside the horizon"
    first_u1 = np.full(m, never, np.int64)
    first_u2 = np.full(m, never, np.int64)
    first_lo = np.full(m, never, np.int64)
    for k in range(1, longest + 1):
        inside = k <= span
        h = high[k : k + m]
        lw = low[k : k + m]
        _first_touch(first_u1, k, inside & (h >= u1))
        _first_touch(first_u2, k, inside & (h >= u2))
        _first_touch(first_lo, k, inside & (lw <= lo))
    return _Touches(first_u1, first_u2, first_lo, span, u1, u2, lo)


def triple_barrier_labels(
    timestamp_ms: np.ndarray,
    high: np.ndarray,
    low: np.ndarray,
    close: np.ndarray,
    *,
    horizon_ms: int,
    upper1: float | np.ndarray,
    upper2: float | np.ndarray,
    lower: float | np.ndarray,
) -> Labels:
    """Label every bar that has a whole horizon ahead of it (see the module docstring).

    `timestamp_ms`: sorted bar open times (int64 epoch ms), shape (n,); `high`, `low`,
    `close`: shape (n,). `upper1`, `upper2`, `lower`: barrier distances as fractions of
    the close (0.008 = 0.8%), scalars or per-bar arrays of length >= m; a bar whose
    barriers are NaN is labelled Neutro (the caller drops it).
    """
    ts = np.asarray(timestamp_ms, np.int64)
    return _labels_from(
        _first_touches(ts, high, low, close, horizon_ms, upper1, upper2, lower), ts, horizon_ms
    )


def _labels_from(t: _Touches | None, ts: np.ndarray, horizon_ms: int) -> Labels:
    if t is None:
        return Labels(np.zeros(0, np.int8), np.zeros(0, np.int64), np.zeros(0, np.int64))
    m = t.span.shape[0]
    # U2 > U1, so a U2 touch is always a U1 touch too: first_u2 >= first_u1.
    stop = (t.lo <= t.span) & (t.lo <= t.u1)
    up = (t.u1 <= t.span) & ~stop
    superlong = up & (t.u2 <= t.span) & (t.u2 < t.lo)
    long_ = up & ~superlong

    label = np.full(m, NEUTRO, np.int8)
    label[stop] = STOP
    label[long_] = LONG
    label[superlong] = SUPERLONG

    # When the outcome became known: Stop at the lower touch; SuperLong at the U2
    # touch; Long once the lower is touched (U2 can no longer win) or at the vertical
    # barrier; Neutro only at the vertical barrier.
    touch = np.full(m, -1, np.int64)  # offset of the deciding touch; -1: the vertical
    touch[stop] = t.lo[stop]
    touch[superlong] = t.u2[superlong]
    lower_after = long_ & (t.lo <= t.span)
    touch[lower_after] = t.lo[lower_after]
    bar = np.arange(m, dtype=np.int64)
    by_touch = touch > 0
    decided_at = np.where(by_touch, bar + touch, bar + t.span)
    decided_ms = np.where(by_touch, ts[np.minimum(decided_at, ts.size - 1)], ts[:m] + horizon_ms)
    return Labels(label, decided_at, decided_ms.astype(np.int64))


@dataclass(frozen=True)
class BarrierTrades:
    """What a trade entered at each labelled bar's close and exited at the labels' own
    barriers would have returned, before costs, for the three trades a signal opens.

    Long (on Long): take profit at U1, stop at L. SuperLong (on SuperLong): take profit
    at U2, stop at L. Short (on Stop, optional): take profit at L, stop at U1. Else the
    trade closes at the close of the last bar inside the horizon. A bar touching both
    barriers counts as the stop, as in the labels. Fills: a take profit at its barrier
    (a resting limit order); a stop at its barrier, or at the bar's open when the bar
    opened beyond it (a gap fills a stop order at the open, not at the barrier).
    """

    exit_bar: dict[str, np.ndarray]
    """trade -> int64 (m,) index of the exit bar (the entry bar itself when the horizon
    holds no bar: a zero return)."""
    gross_return: dict[str, np.ndarray]
    """trade -> float64 (m,) simple return of the position (exit / entry - 1 for a
    long, 1 - exit / entry for a short)."""
    risk: dict[str, np.ndarray]
    """trade -> float64 (m,) the stop's distance from the entry, a fraction of it (the
    "1R" of the trade)."""


def barrier_trades(
    timestamp_ms: np.ndarray,
    open_: np.ndarray,
    high: np.ndarray,
    low: np.ndarray,
    close: np.ndarray,
    *,
    horizon_ms: int,
    upper1: float | np.ndarray,
    upper2: float | np.ndarray,
    lower: float | np.ndarray,
) -> BarrierTrades:
    """The exits and gross returns of `TRADE_NAMES` at every labelled bar (arguments as
    `triple_barrier_labels`, plus the bars' opens for stop fills)."""
    ts = np.asarray(timestamp_ms, np.int64)
    t = _first_touches(ts, high, low, close, horizon_ms, upper1, upper2, lower)
    return _trades_from(t, open_, close)


def _trades_from(t: _Touches | None, open_: np.ndarray, close: np.ndarray) -> BarrierTrades:
    if t is None:
        empty_i, empty_f = np.zeros(0, np.int64), np.zeros(0, np.float64)
        return BarrierTrades(
            dict.fromkeys(TRADE_NAMES, empty_i),
            dict.fromkeys(TRADE_NAMES, empty_f),
            dict.fromkeys(TRADE_NAMES, empty_f),
        )
    m = t.span.shape[0]
    bar = np.arange(m, dtype=np.int64)
    open_ = np.asarray(open_, np.float64)
    close = np.asarray(close, np.float64)
    entry = close[:m]
    exit_bar: dict[str, np.ndarray] = {}
    gross: dict[str, np.ndarray] = {}
    risk: dict[str, np.ndarray] = {}
    for name, take, take_price, stop, stop_price, sign in (
        ("long", t.u1, t.u1_price, t.lo, t.lo_price, 1.0),
        ("superlong", t.u2, t.u2_price, t.lo, t.lo_price, 1.0),
        ("short", t.lo, t.lo_price, t.u1, t.u1_price, -1.0),
    ):
        stopped = (stop <= t.span) & (stop <= take)  # a tie is the stop
        taken = (take <= t.span) & ~stopped
        at = bar + t.span
        at[stopped] = bar[stopped] + stop[stopped]
        at[taken] = bar[taken] + take[taken]
        price = close[at].copy()
        price[taken] = take_price[taken]
        gap_open = open_[at]
        # A stop is filled at its barrier, or at the open when the bar opened beyond it.
        worse = np.minimum if sign > 0 else np.maximum
        price[stopped] = worse(stop_price[stopped], gap_open[stopped])
        exit_bar[name] = at
        gross[name] = sign * (price / entry - 1.0)
        risk[name] = sign * (1.0 - stop_price / entry)
    return BarrierTrades(exit_bar, gross, risk)


def labels_and_trades(
    timestamp_ms: np.ndarray,
    open_: np.ndarray,
    high: np.ndarray,
    low: np.ndarray,
    close: np.ndarray,
    *,
    horizon_ms: int,
    upper1: float | np.ndarray,
    upper2: float | np.ndarray,
    lower: float | np.ndarray,
) -> tuple[Labels, BarrierTrades]:
    """`triple_barrier_labels` and `barrier_trades` from one pass over the horizon."""
    ts = np.asarray(timestamp_ms, np.int64)
    t = _first_touches(ts, high, low, close, horizon_ms, upper1, upper2, lower)
    return _labels_from(t, ts, horizon_ms), _trades_from(t, open_, close)


def causal_volatility(timestamp_ms: np.ndarray, close: np.ndarray, window: int) -> np.ndarray:
    """Realised volatility per bar: the RMS of the last `window` 1-bar log returns
    ending at the bar (bars t-window+1 .. t), float64 (n,), NaN for the first `window`
    bars. Causal: bar t never sees a later close. Source: AFML's `getDailyVol` (an
    exponentially weighted standard deviation there; a trailing RMS here, as the
    `rvol_*` features)."""
    close = np.asarray(close, np.float64)
    out = np.full(close.shape[0], np.nan)
    if close.shape[0] <= window:
        return out
    r2 = np.concatenate(([0.0], np.diff(np.log(close)) ** 2))
    csum = np.cumsum(r2)
    out[window:] = np.sqrt(np.maximum(csum[window:] - csum[:-window], 0.0) / window)
    return out


def horizon_moves(
    timestamp_ms: np.ndarray,
    high: np.ndarray,
    low: np.ndarray,
    close: np.ndarray,
    *,
    horizon_ms: int,
    rows: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """(up, down): the largest rise of the high and fall of the low inside the horizon
    of each bar in `rows`, as fractions of its close (float64, shape rows.shape). Used
    to suggest barriers that a given share of bars would touch."""
    ts = np.asarray(timestamp_ms, np.int64)
    rows = np.asarray(rows, np.int64)
    high = np.asarray(high, np.float64)
    low = np.asarray(low, np.float64)
    last = horizon_end_bar(ts, horizon_ms, int(rows.max()) + 1)[rows] if rows.size else rows
    span = last - rows
    up = np.full(rows.shape, -np.inf)
    down = np.full(rows.shape, -np.inf)
    base = np.asarray(close, np.float64)[rows]
    for k in range(1, int(span.max(initial=0)) + 1):
        inside = k <= span
        idx = np.minimum(rows + k, ts.size - 1)
        up = np.where(inside, np.maximum(up, high[idx] / base - 1.0), up)
        down = np.where(inside, np.maximum(down, 1.0 - low[idx] / base), down)
    return up, down


def label_counts(label: np.ndarray, num_classes: int = 4) -> list[int]:
    """Count of each class 0..num_classes-1, as plain ints (JSON-friendly)."""
    return [int(c) for c in np.bincount(np.asarray(label, np.int64), minlength=num_classes)]
