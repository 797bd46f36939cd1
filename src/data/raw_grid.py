"""The bar interval of raw candles (docs/design.md, "Data contract"); part of reading
raw candles (`raw_io`).

Bar interval. A file's bars lie on a grid: the greatest common divisor of the steps
between its timestamps (`bar_grid_ms`), which missing bars do not change. When the file
name has an interval token (`raw_names`) and the grid is a whole multiple of it, the
named interval is the bar interval (a ``1m`` file with every other minute missing still
has 1-minute bars). Rejected: a grid that is not a whole multiple of the named interval,
a grid below one second (timestamps that are not bar open times), files of one symbol
with different intervals, or offset against each other on the interval's grid (the last
two when a symbol's files are merged, `raw_io.merge_chunks`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from src.core.errors import DataError
from src.data.raw_names import _name_parts, interval_from_filename

#: Bar grids below this many milliseconds are not bars.
MIN_BAR_MS = 1000

# Units for durations in messages, largest first.
_DURATIONS = (
    (604_800_000, "week"),
    (86_400_000, "day"),
    (3_600_000, "hour"),
    (60_000, "minute"),
    (1000, "second"),
)


def _duration(ms: int) -> str:
    """`300000` -> `5 minutes`; `7` -> `7 ms`."""
    for size, name in _DURATIONS:
        if ms % size == 0:
            n = ms // size
            return f"{n} {name}{'' if n == 1 else 's'}"
    return f"{ms} ms"


def _interval_adjective(ms: int) -> str:
    """`300000` -> `5-minute`; `7` -> `7-ms`."""
    for size, name in _DURATIONS:
        if ms % size == 0:
            return f"{ms // size}-{name}"
    return f"{ms}-ms"


def bar_grid_ms(timestamp_ms: np.ndarray) -> int | None:
    """The grid the timestamps lie on: the greatest common divisor of the positive steps
    between them, in milliseconds (any order; repeats are ignored).

    Missing bars do not change it (unlike a median step). None for fewer than two
    distinct timestamps.
    """
    ts = np.asarray(timestamp_ms, dtype=np.int64)
    steps = np.abs(np.diff(ts))  # gcd of these = gcd of all pairwise differences
    steps = steps[steps != 0]
    if steps.size == 0:
        return None
    return int(np.gcd.reduce(steps))


def _file_bar_ms(ts: np.ndarray, path: Path, symbol: str) -> int | None:
    """A file's bar interval for one symbol: its grid, or the interval its name gives
    when the grid is a whole multiple of that."""
    grid = bar_grid_ms(ts)
    named = interval_from_filename(path)
    if grid is not None and grid < MIN_BAR_MS:
        raise DataError(
            f"{path}: timestamps are not on a regular bar grid (steps have a greatest "
            f"common divisor of {grid} ms, symbol {symbol}); use bar open times"
        )
    if grid is None or named is None:
        return named if grid is None else grid
    if grid % named:
        raise DataError(
            f"{path}: the file name says {_name_parts(path)[1]} bars ({_duration(named)}) "
            f"but the timestamps of symbol {symbol} step by multiples of {_duration(grid)} "
            "(their greatest common divisor), which is not a whole multiple of it; rename "
            "the file or fix its timestamps"
        )
    return named


__all__ = ["MIN_BAR_MS", "bar_grid_ms"]
