"""Causal per-bar features, in pure numpy.

Every feature at bar t is computed from bars t-W+1 .. t only (trailing windows, no
centred windows, no statistics over the whole series), so a feature never sees the
future. Windows count bars of the series, not wall-clock time: across a gap in the data
a 60-bar window reaches further back in time (the loader keeps model windows away from
gaps; the features only need to be causal, which they are either way).

The first `WARMUP_BARS` bars lack a full lookback; their features are NaN, and
`prepare` drops those rows. After the warm-up every feature is finite for valid candles
(positive prices, non-negative volume).

Order flow: the taker-buy imbalance of a bar is 2 * taker_buy_volume / volume - 1, in
[-1, 1] (+1: every trade was an aggressive buy). When the data has no
`taker_buy_volume`, or a bar has zero volume, the imbalance is 0 ("no information"),
so the same model layout works for every source.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

#: Feature columns, in the order they are written to the processed lake.
FEATURE_NAMES: tuple[str, ...] = (
    "ret_1",  # log return over 1 bar
    "ret_5",  # log return over 5 bars
    "ret_15",  # log return over 15 bars
    "ret_60",  # log return over 60 bars
    "rvol_15",  # realised volatility: RMS of 1-bar log returns over 15 bars
    "rvol_60",  # realised volatility over 60 bars
    "range",  # (high - low) / close
    "body",  # (close - open) / close, signed
    "upper_wick",  # (high - max(open, close)) / close
    "lower_wick",  # (min(open, close) - low) / close
    "volume_z_60",  # z-score of log(1 + volume) against the last 60 bars
    "imbalance",  # taker-buy imbalance of the bar, in [-1, 1]
    "imbalance_5",  # mean imbalance over 5 bars
    "imbalance_15",  # mean imbalance over 15 bars
    "imbalance_60",  # mean imbalance over 60 bars
    "close_ma_15",  # log(close) minus its mean over 15 bars
    "close_ma_60",  # log(close) minus its mean over 60 bars
)
NUM_FEATURES = len(FEATURE_NAMES)

#: Bars of history the longest feature needs: rows before this index are NaN.
WARMUP_BARS = 60

# Below this spread of log-volume in a window, the z-score is set to 0.
_MIN_LOG_VOLUME_STD = 1e-6


def feature_names() -> list[str]:
    """The feature column names, in lake order."""
    return list(FEATURE_NAMES)


def _lag_diff(x: np.ndarray, lag: int) -> np.ndarray:
    """x[t] - x[t - lag], NaN where t < lag."""
    out = np.full_like(x, np.nan)
    out[lag:] = x[lag:] - x[:-lag]
    return out


def _trailing_mean(x: np.ndarray, window: int) -> np.ndarray:
    """Mean of x[t-window+1 .. t], NaN where t < window - 1.

    Each output reads only its own window (no running sums, whose rounding would drift
    over a long series), so a value is the same whatever comes after it; a NaN input
    propagates into every window that holds it.
    """
    out = np.full_like(x, np.nan)
    if x.shape[0] >= window:
        out[window - 1 :] = sliding_window_view(x, window).mean(axis=1)
    return out


def _trailing_std(x: np.ndarray, window: int) -> np.ndarray:
    """Population standard deviation over the same trailing window as `_trailing_mean`.

    Computed as sqrt(E[x^2] - E[x]^2) so no (n, window) temporary is materialised.
    """
    mean = _trailing_mean(x, window)
    return np.sqrt(np.maximum(_trailing_mean(x * x, window) - mean * mean, 0.0))


def _imbalance(volume: np.ndarray, taker_buy_volume: np.ndarray | None) -> np.ndarray:
    """2 * taker / volume - 1, clipped to [-1, 1]; 0 without taker data or volume."""
    if taker_buy_volume is None:
        return np.zeros_like(volume)
    ratio = np.divide(taker_buy_volume, volume, out=np.full_like(volume, 0.5), where=volume > 0)
    return np.clip(2.0 * ratio - 1.0, -1.0, 1.0)


def compute_features(
    open_: np.ndarray,
    high: np.ndarray,
    low: np.ndarray,
    close: np.ndarray,
    volume: np.ndarray,
    taker_buy_volume: np.ndarray | None = None,
) -> np.ndarray:
    """Features of every bar, shape (n, NUM_FEATURES), float32, columns in FEATURE_NAMES
    order; rows before WARMUP_BARS hold NaN.

    Inputs are one symbol's bars in time order; prices must be > 0 and volumes >= 0
    (`raw_checks` checks this).
    """
    o, h, lo, c, v = (np.asarray(a, dtype=np.float64) for a in (open_, high, low, close, volume))
    tb = None if taker_buy_volume is None else np.asarray(taker_buy_volume, np.float64)

    log_c = np.log(c)
    ret_1 = _lag_diff(log_c, 1)
    squared = ret_1 * ret_1
    log_v = np.log1p(v)
    v_mean = _trailing_mean(log_v, 60)
    v_std = _trailing_std(log_v, 60)
    # A (nearly) flat volume window has no meaningful spread: call the bar "usual"
    # (z = 0) rather than divide by rounding noise.
    volume_z = np.divide(
        log_v - v_mean,
        v_std,
        out=np.where(np.isnan(v_std), np.nan, 0.0),
        where=v_std > _MIN_LOG_VOLUME_STD,
    )
    imb = _imbalance(v, tb)

    columns = {
        "ret_1": ret_1,
        "ret_5": _lag_diff(log_c, 5),
        "ret_15": _lag_diff(log_c, 15),
        "ret_60": _lag_diff(log_c, 60),
        "rvol_15": np.sqrt(_trailing_mean(squared, 15)),
        "rvol_60": np.sqrt(_trailing_mean(squared, 60)),
        "range": (h - lo) / c,
        "body": (c - o) / c,
        "upper_wick": (h - np.maximum(o, c)) / c,
        "lower_wick": (np.minimum(o, c) - lo) / c,
        "volume_z_60": volume_z,
        "imbalance": imb,
        "imbalance_5": _trailing_mean(imb, 5),
        "imbalance_15": _trailing_mean(imb, 15),
        "imbalance_60": _trailing_mean(imb, 60),
        "close_ma_15": log_c - _trailing_mean(log_c, 15),
        "close_ma_60": log_c - _trailing_mean(log_c, 60),
    }
    out = np.stack([columns[name] for name in FEATURE_NAMES], axis=1).astype(np.float32)
    # Single-bar features are defined from bar 0; mask the warm-up uniformly so "a row
    # is usable" is simply "row index >= WARMUP_BARS".
    out[: min(WARMUP_BARS, out.shape[0])] = np.nan
    return out
