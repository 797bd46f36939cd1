"""Hierarchical triple-barrier labels (docs/design.md, "Data contract"), in pure numpy.

For bar t with close c, the bars t+1 .. t+H are inspected, where H is a number of
*bars of the series*, not of wall-clock time: if bars are missing (an exchange outage,
a gap between files), the H bars ahead span more time than H bar intervals. The label
stays honest about that because `decided_at` points at the real bar that decided it,
so its timestamp (`horizon_end`) is the true time the label became known, and the
chronological purge in the loader works on that.

Barriers (all percentages of the close c):
    U1 = c * (1 + upper1_pct / 100), U2 = c * (1 + upper2_pct / 100),
    L  = c * (1 - lower_pct / 100).
A barrier is touched by a bar when its high >= U (upper barriers) or its low <= L.
Inside a bar the order of high and low is unknown, so a tie is resolved for safety:
    Stop (1):      L is touched before U1, or in the same bar as U1.
    SuperLong (3): U1 is touched (and not Stop) and U2 is touched strictly before L
                   (U2 and L in the same bar is not SuperLong).
    Long (2):      U1 is touched, not Stop, not SuperLong.
    Neutro (0):    nothing is touched within H bars.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

NEUTRO, STOP, LONG, SUPERLONG = 0, 1, 2, 3


@dataclass(frozen=True)
class Labels:
    """Labels of the bars that have a full horizon ahead (the first n - H bars)."""

    label: np.ndarray
    """int8 class per bar, shape (n - H,)."""
    decided_at: np.ndarray
    """int64 index of the bar whose touch decided the label (t < decided_at <= t + H)."""


def horizon_bars(horizon_minutes: int, bar_ms: int) -> int:
    """Bars in the label horizon; raises ValueError when it is not a whole number >= 1."""
    horizon_ms = int(horizon_minutes) * 60_000
    if bar_ms <= 0 or horizon_ms % bar_ms or horizon_ms < bar_ms:
        raise ValueError(
            f"the label horizon of {horizon_minutes} minutes is not a whole number of bars "
            f"of {bar_ms / 60_000:g} minutes"
        )
    return horizon_ms // bar_ms


def _first_touch(touched_at: np.ndarray, k: int, touched: np.ndarray) -> None:
    """Record offset k where `touched` is true and no earlier offset was recorded."""
    never = touched_at > k  # offsets are visited in increasing order
    touched_at[touched & never] = k


def triple_barrier_labels(
    high: np.ndarray,
    low: np.ndarray,
    close: np.ndarray,
    *,
    horizon: int,
    upper1_pct: float,
    upper2_pct: float,
    lower_pct: float,
) -> Labels:
    """Label every bar that has `horizon` bars ahead of it (see the module docstring).

    Vectorised over bars; the loop runs over the `horizon` offsets only.
    """
    if horizon < 1:
        raise ValueError(f"horizon must be >= 1 bar, got {horizon}")
    if not upper2_pct > upper1_pct > 0 or not lower_pct > 0:
        raise ValueError("barriers need 0 < upper1_pct < upper2_pct and lower_pct > 0")
    high = np.asarray(high, dtype=np.float64)
    low = np.asarray(low, dtype=np.float64)
    close = np.asarray(close, dtype=np.float64)
    m = close.shape[0] - horizon  # bars with a full horizon ahead
    if m <= 0:
        return Labels(np.zeros(0, np.int8), np.zeros(0, np.int64))

    base = close[:m]
    u1 = base * (1.0 + upper1_pct / 100.0)
    u2 = base * (1.0 + upper2_pct / 100.0)
    lo = base * (1.0 - lower_pct / 100.0)

    never = horizon + 1  # "not touched within the horizon"
    first_u1 = np.full(m, never, np.int64)
    first_u2 = np.full(m, never, np.int64)
    first_lo = np.full(m, never, np.int64)
    for k in range(1, horizon + 1):
        h = high[k : k + m]
        lw = low[k : k + m]
        _first_touch(first_u1, k, h >= u1)
        _first_touch(first_u2, k, h >= u2)
        _first_touch(first_lo, k, lw <= lo)

    # U2 > U1, so a U2 touch is always a U1 touch too: first_u2 >= first_u1.
    stop = (first_lo <= horizon) & (first_lo <= first_u1)
    up = (first_u1 <= horizon) & ~stop
    superlong = up & (first_u2 <= horizon) & (first_u2 < first_lo)
    long_ = up & ~superlong

    label = np.full(m, NEUTRO, np.int8)
    label[stop] = STOP
    label[long_] = LONG
    label[superlong] = SUPERLONG

    # When the outcome became known: Stop at the lower touch; SuperLong at the U2
    # touch; Long once the lower is touched (U2 can no longer win) or at the horizon;
    # Neutro only at the horizon.
    offset = np.full(m, horizon, np.int64)
    offset[stop] = first_lo[stop]
    offset[superlong] = first_u2[superlong]
    offset[long_] = np.minimum(first_lo[long_], horizon)
    return Labels(label, np.arange(m, dtype=np.int64) + offset)


def label_counts(label: np.ndarray, num_classes: int = 4) -> list[int]:
    """Count of each class 0..num_classes-1, as plain ints (JSON-friendly)."""
    return [int(c) for c in np.bincount(np.asarray(label, np.int64), minlength=num_classes)]
