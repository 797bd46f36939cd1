"""Causal features: shape, warm-up, known values, and causality as a property."""

from __future__ import annotations

import numpy as np
import pytest

from src.data.features import (
    FEATURE_NAMES,
    NUM_FEATURES,
    WARMUP_BARS,
    compute_features,
    feature_names,
)

COL = {name: i for i, name in enumerate(FEATURE_NAMES)}


def random_candles(rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
    close = 100 * np.exp(np.cumsum(rng.standard_normal(n) * 0.002))
    open_ = np.concatenate(([100.0], close[:-1]))
    volume = rng.lognormal(3, 0.5, n)
    return {
        "open_": open_,
        "high": np.maximum(open_, close) * (1 + rng.exponential(0.001, n)),
        "low": np.minimum(open_, close) * (1 - rng.exponential(0.001, n)),
        "close": close,
        "volume": volume,
        "taker_buy_volume": volume * rng.uniform(0, 1, n),
    }


def test_names_and_shape():
    assert feature_names() == list(FEATURE_NAMES)
    assert len(set(FEATURE_NAMES)) == NUM_FEATURES >= 16
    feats = compute_features(**random_candles(np.random.default_rng(0), 300))
    assert feats.shape == (300, NUM_FEATURES)
    assert feats.dtype == np.float32


def test_warmup_rows_are_nan_and_the_rest_finite():
    feats = compute_features(**random_candles(np.random.default_rng(1), 300))
    assert np.isnan(feats[:WARMUP_BARS]).all()
    assert np.isfinite(feats[WARMUP_BARS:]).all()


def test_shorter_than_warmup():
    feats = compute_features(**random_candles(np.random.default_rng(1), 10))
    assert feats.shape == (10, NUM_FEATURES) and np.isnan(feats).all()


@pytest.mark.parametrize("seed", range(4))
def test_later_bars_never_change_earlier_features(seed):
    """Property: perturbing every bar after t leaves features at <= t bit-identical."""
    rng = np.random.default_rng(seed)
    n = 400
    base = random_candles(rng, n)
    full = compute_features(**base)
    for t in rng.integers(0, n - 1, 5):
        other = random_candles(rng, n)  # a different future
        mixed = {k: np.concatenate((base[k][: t + 1], other[k][t + 1 :])) for k in base}
        np.testing.assert_array_equal(compute_features(**mixed)[: t + 1], full[: t + 1])


@pytest.mark.parametrize("t", [0, 59, 60, 61, 150, 398])
def test_truncated_history_gives_the_same_features(t):
    """Features at t from bars 0..t only equal those computed on the whole series."""
    candles = random_candles(np.random.default_rng(9), 400)
    full = compute_features(**candles)
    part = compute_features(**{k: v[: t + 1] for k, v in candles.items()})
    np.testing.assert_allclose(part, full[: t + 1], rtol=1e-6, atol=1e-9)


def test_known_values():
    c = random_candles(np.random.default_rng(2), 200)
    feats = compute_features(**c)
    t = 150
    close, open_, high, low = c["close"], c["open_"], c["high"], c["low"]
    imb = 2 * c["taker_buy_volume"] / c["volume"] - 1
    expected = {
        "ret_1": np.log(close[t] / close[t - 1]),
        "ret_60": np.log(close[t] / close[t - 60]),
        "rvol_15": np.sqrt(np.mean(np.diff(np.log(close[t - 15 : t + 1])) ** 2)),
        "range": (high[t] - low[t]) / close[t],
        "body": (close[t] - open_[t]) / close[t],
        "upper_wick": (high[t] - max(open_[t], close[t])) / close[t],
        "imbalance": imb[t],
        "imbalance_15": imb[t - 14 : t + 1].mean(),
        "close_ma_60": np.log(close[t]) - np.log(close[t - 59 : t + 1]).mean(),
    }
    lv = np.log1p(c["volume"][t - 59 : t + 1])
    expected["volume_z_60"] = (lv[-1] - lv.mean()) / lv.std()
    for name, value in expected.items():
        assert feats[t, COL[name]] == pytest.approx(value, rel=1e-5, abs=1e-7), name


def test_without_taker_volume_imbalance_is_zero():
    c = random_candles(np.random.default_rng(3), 200)
    c["taker_buy_volume"] = None
    feats = compute_features(**c)
    for name in ("imbalance", "imbalance_5", "imbalance_15", "imbalance_60"):
        assert (feats[WARMUP_BARS:, COL[name]] == 0).all()


def test_zero_and_constant_volume_stay_finite():
    c = random_candles(np.random.default_rng(4), 200)
    c["volume"] = np.full(200, 5.0)
    c["taker_buy_volume"] = np.full(200, 2.5)
    c["volume"][100] = c["taker_buy_volume"][100] = 0.0
    feats = compute_features(**c)
    assert np.isfinite(feats[WARMUP_BARS:]).all()
    assert feats[100, COL["imbalance"]] == 0
    assert feats[90, COL["volume_z_60"]] == 0  # a flat window: z = 0, not inf
