"""Which rows end a model window, and the windows themselves (pure numpy).

A window is `seq_len` consecutive rows of one symbol's series, ending at the bar it
predicts, exactly as training forms them (`src.data.lake`): no two consecutive rows in
it are more than `max_gap_ms` apart (`max_gap_bars` bar intervals), and here also
every row's features are finite (the lake holds finite rows only; raw candles have a
NaN feature warm-up). So a run of usable rows breaks at a gap in time and at a row
with a NaN or infinite feature, and a row ends a window when the run reaching it is at
least `seq_len` rows long.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view


def usable_rows(features: np.ndarray) -> np.ndarray:
    """bool (n,): rows of a (n, F) feature array whose every value is finite."""
    return np.isfinite(features).all(axis=1)


def run_lengths(ts_ms: np.ndarray, usable: np.ndarray, max_gap_ms: float) -> np.ndarray:
    """int64 (n,): length of the run of usable, contiguous rows ending at each row.

    `ts_ms`: int64 (n,) epoch ms, increasing. A run breaks where two consecutive rows
    are more than `max_gap_ms` apart and after an unusable row; an unusable row's run
    is 0. With every row usable this is `src.data.lake.run_lengths(ts_ms, 0, max_gap_ms)`.
    """
    ts_ms = np.asarray(ts_ms, np.int64)
    usable = np.asarray(usable, bool)
    n = ts_ms.shape[0]
    if usable.shape != (n,):
        raise ValueError(f"usable has shape {usable.shape}, expected ({n},)")
    rows = np.arange(n, dtype=np.int64)
    breaks = np.ones(n, dtype=bool)
    breaks[1:] = (np.diff(ts_ms) > max_gap_ms) | ~usable[:-1]
    run_start = np.maximum.accumulate(np.where(breaks, rows, 0)) if n else rows
    runs = rows - run_start + 1
    runs[~usable] = 0
    return runs


def window_ends(
    ts_ms: np.ndarray, usable: np.ndarray, *, seq_len: int, max_gap_ms: float
) -> np.ndarray:
    """int64 (W,): the rows that end a complete window, increasing."""
    if seq_len < 1:
        raise ValueError(f"seq_len must be >= 1, got {seq_len}")
    return np.flatnonzero(run_lengths(ts_ms, usable, max_gap_ms) >= seq_len)


def rows_in_range(ts_ms: np.ndarray, from_ms: int | None, to_ms: int | None) -> tuple[int, int]:
    """(lo, hi): the rows with from_ms <= timestamp < to_ms (None: unbounded) are lo..hi-1."""
    lo = 0 if from_ms is None else int(np.searchsorted(ts_ms, from_ms, side="left"))
    hi = len(ts_ms) if to_ms is None else int(np.searchsorted(ts_ms, to_ms, side="left"))
    return lo, max(lo, hi)


def gather_windows(features: np.ndarray, ends: np.ndarray, seq_len: int) -> np.ndarray:
    """float32 (len(ends), seq_len, F), C-contiguous: rows end-seq_len+1 .. end of a
    (n, F) array for each end (which must be >= seq_len - 1). Copies only the windows
    asked for, so a caller bounds memory by asking for a batch at a time."""
    ends = np.asarray(ends, np.int64)
    if features.shape[0] < seq_len:
        return np.empty((0, seq_len, features.shape[1]), np.float32)
    # (n - seq_len + 1, 1, seq_len, F) view; [:, 0] drops the axis of the feature window.
    view = sliding_window_view(features, (seq_len, features.shape[1]))[:, 0]
    return np.ascontiguousarray(view[ends - (seq_len - 1)], dtype=np.float32)
