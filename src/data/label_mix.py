"""Is a label mix learnable, and which barriers would make it so? Pure functions.

A mix where a class is (almost) absent, or one class holds nearly every row, trains a
model that learns nothing and still scores well: 99.8% Neutro gives 99.8% accuracy
to a constant. `prepare` checks the mix with `mix_problems` and, when it is poor,
suggests barriers computed from the data: from the distribution of each bar's largest
rise and fall inside its horizon, the barrier that a chosen share of bars would touch.
The distribution is kept as a histogram on fixed bins, so symbols prepared in
parallel add up exactly and the parent never holds every bar.
"""

from __future__ import annotations

import numpy as np

from src.config import LabelConfig
from src.core.constants import CLASS_NAMES

MIN_SHARE = 0.005
"""A class below this share of rows is too rare to learn."""
MIN_ROWS = 100
"""A class with fewer rows than this is too rare to learn, whatever its share."""
MAX_SHARE = 0.97
"""A class above this share of rows makes every score about that class alone."""

#: Share of bars each suggested barrier is touched by inside the horizon.
TOUCH_TARGETS: dict[str, float] = {"upper1": 0.30, "upper2": 0.10, "lower": 0.30}

#: Bin edges of a move: a fraction of the close (fixed barriers) or a multiple of the
#: horizon volatility (volatility barriers). Log-spaced, about 2.3% wide each.
MOVE_EDGES = np.geomspace(1e-7, 1e3, 1001)


def move_histogram(moves: np.ndarray) -> np.ndarray:
    """Counts of `moves` in `MOVE_EDGES` bins, int64 (len(MOVE_EDGES) + 1,); bin 0
    holds moves below the first edge (no move at all), the last those above."""
    moves = np.asarray(moves, np.float64)
    moves = moves[np.isfinite(moves)]
    idx = np.searchsorted(MOVE_EDGES, moves, side="right")
    return np.bincount(idx, minlength=MOVE_EDGES.size + 1).astype(np.int64)


def share_above(hist: np.ndarray, share: float) -> float | None:
    """The smallest bin edge that at most `share` of the counted bars reach, or None
    when the histogram is empty or nearly every bar did not move at all."""
    total = int(hist.sum())
    if total == 0:
        return None
    reach = total - np.cumsum(hist)  # reach[i]: bars at or beyond MOVE_EDGES[i]
    i = int(np.argmax(reach <= share * total))
    return None if i == 0 or i >= MOVE_EDGES.size else float(MOVE_EDGES[i])


def mix_problems(counts: list[int]) -> list[str]:
    """What makes a label mix unlearnable, one phrase per class ([] when fine)."""
    total = sum(counts)
    if total == 0:
        return ["no rows were labelled"]
    out = []
    for name, n in zip(CLASS_NAMES, counts, strict=True):
        share = n / total
        if share < MIN_SHARE or n < MIN_ROWS:
            rows = "row" if n == 1 else "rows"
            out.append(f"{name} holds {n:,} {rows} ({100 * share:.2f}%)")
        elif share > MAX_SHARE:
            out.append(f"{name} holds {100 * share:.1f}% of rows")
    return out


def _round2(x: float) -> float:
    """Two significant digits: what a person types."""
    return float(f"{x:.2g}")


def suggest_barriers(label: LabelConfig, up: np.ndarray, down: np.ndarray) -> str | None:
    """Flags that would put `TOUCH_TARGETS` of bars on each barrier, from the histograms
    of rises (`up`) and falls (`down`) in the barriers' unit; None without data."""
    u1 = share_above(up, TOUCH_TARGETS["upper1"])
    u2 = share_above(up, TOUCH_TARGETS["upper2"])
    lo = share_above(down, TOUCH_TARGETS["lower"])
    if None in (u1, u2, lo):
        return None
    volatility = label.barriers == "volatility"
    scale = 1.0 if volatility else 100.0  # fractions of the close are flags in percent
    u1, u2, lo = _round2(u1 * scale), _round2(u2 * scale), _round2(lo * scale)
    if u2 <= u1:
        u2 = _round2(u1 * 1.5)
    kind = "mult" if volatility else "pct"
    flags = f"--upper1-{kind} {u1:g} --upper2-{kind} {u2:g} --lower-{kind} {lo:g}"
    shares = "/".join(f"{100 * TOUCH_TARGETS[k]:.0f}%" for k in ("upper1", "upper2", "lower"))
    text = f"{flags} (touched by about {shares} of bars in this data)"
    if not volatility:
        text += ", or --barriers volatility"
    return text
