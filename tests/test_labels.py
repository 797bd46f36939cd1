"""Hierarchical triple-barrier labels: every rule on hand-built paths, plus properties."""

from __future__ import annotations

import numpy as np
import pytest

from src.data.labels import (
    LONG,
    NEUTRO,
    STOP,
    SUPERLONG,
    horizon_bars,
    label_counts,
    triple_barrier_labels,
)

# With close 100 and the default barriers: U1 = 100.8, U2 = 101.6, L = 99.25.
QUIET = (100.2, 99.8)  # (high, low) that touches nothing
U1 = (100.9, 99.8)
U2 = (101.7, 99.8)
LOW = (100.2, 99.2)
U1_AND_LOW = (100.9, 99.2)
U2_AND_LOW = (101.7, 99.2)


def label_first_bar(bars: list[tuple[float, float]], horizon: int | None = None):
    """Label bar 0 (close 100) followed by `bars` (high, low); returns (label, decided_at)."""
    horizon = len(bars) if horizon is None else horizon
    high = np.array([100.0] + [h for h, _ in bars])
    low = np.array([100.0] + [lo for _, lo in bars])
    close = np.full(len(high), 100.0)
    out = triple_barrier_labels(
        high, low, close, horizon=horizon, upper1_pct=0.8, upper2_pct=1.6, lower_pct=0.75
    )
    return int(out.label[0]), int(out.decided_at[0])


@pytest.mark.parametrize(
    ("bars", "expected", "decided"),
    [
        ([QUIET] * 5, NEUTRO, 5),
        ([QUIET, LOW, QUIET, QUIET], STOP, 2),  # lower only
        ([QUIET, LOW, U1, U2], STOP, 2),  # lower before U1, whatever follows
        ([QUIET, U1_AND_LOW, U2, QUIET], STOP, 2),  # U1 and L in one bar: safety first
        ([QUIET, U1, QUIET, QUIET], LONG, 4),  # U1 only: decided at the horizon
        ([U1, QUIET, U2, QUIET], SUPERLONG, 3),  # U1 then U2, before any L
        ([U2, QUIET, QUIET], SUPERLONG, 1),  # U1 and U2 in one bar, no L
        ([U1, QUIET, U2_AND_LOW, QUIET], LONG, 3),  # U2 and L in one bar after U1
        ([U1, LOW, U2, QUIET], LONG, 2),  # L after U1 ends the SuperLong chance
        ([U2_AND_LOW, QUIET], STOP, 1),  # everything in the first bar: Stop
    ],
)
def test_rules(bars, expected, decided):
    assert label_first_bar(bars) == (expected, decided)


def test_touches_after_the_horizon_do_not_count():
    assert label_first_bar([QUIET, QUIET, LOW], horizon=2) == (NEUTRO, 2)
    assert label_first_bar([U1, QUIET, U2], horizon=2) == (LONG, 2)


def test_exact_barrier_counts_as_touched():
    high = np.array([100.0, 100.0 * (1 + 0.8 / 100)])
    low = np.array([100.0, 100.0])
    out = triple_barrier_labels(
        high, low, np.full(2, 100.0), horizon=1, upper1_pct=0.8, upper2_pct=1.6, lower_pct=0.75
    )
    assert out.label.tolist() == [LONG]


def test_only_bars_with_a_full_horizon_are_labelled():
    for n, expected in ((3, 0), (4, 0), (5, 1), (9, 5)):
        high = low = close = np.full(n, 100.0)
        out = triple_barrier_labels(
            high, low, close, horizon=4, upper1_pct=0.8, upper2_pct=1.6, lower_pct=0.75
        )
        assert out.label.shape == out.decided_at.shape == (expected,)
        assert out.label.dtype == np.int8


def _reference(high, low, close, horizon, u1p, u2p, lp):
    """Per-bar loop written straight from the rules (slow, obviously right)."""
    labels, decided = [], []
    for t in range(len(close) - horizon):
        c = close[t]
        u1, u2, lo = c * (1 + u1p / 100), c * (1 + u2p / 100), c * (1 - lp / 100)
        label, at, seen_u1 = NEUTRO, t + horizon, False
        for k in range(t + 1, t + horizon + 1):
            if low[k] <= lo:
                label, at = (LONG if seen_u1 else STOP), k
                break
            if high[k] >= u2:
                label, at = SUPERLONG, k
                break
            if high[k] >= u1:
                seen_u1, label = True, LONG
        labels.append(label)
        decided.append(at)
    return np.array(labels), np.array(decided)


def _random_path(rng: np.random.Generator, n: int, vol: float = 0.004):
    close = 100 * np.exp(np.cumsum(rng.standard_normal(n) * vol))
    open_ = np.concatenate(([100.0], close[:-1]))
    high = np.maximum(open_, close) * np.exp(rng.exponential(vol / 2, n))
    low = np.minimum(open_, close) * np.exp(-rng.exponential(vol / 2, n))
    return high, low, close


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_vectorised_equals_reference(seed):
    rng = np.random.default_rng(seed)
    high, low, close = _random_path(rng, 600)
    out = triple_barrier_labels(
        high, low, close, horizon=12, upper1_pct=0.8, upper2_pct=1.6, lower_pct=0.75
    )
    ref_label, ref_decided = _reference(high, low, close, 12, 0.8, 1.6, 0.75)
    np.testing.assert_array_equal(out.label, ref_label)
    np.testing.assert_array_equal(out.decided_at, ref_decided)
    assert set(np.unique(out.label)) == {NEUTRO, STOP, LONG, SUPERLONG}  # all rules exercised


def test_decided_at_is_within_the_horizon_and_honest():
    """t < decided_at <= t + H, and bars after decided_at cannot change the label."""
    rng = np.random.default_rng(5)
    high, low, close = _random_path(rng, 800)
    h = 20
    kwargs = dict(horizon=h, upper1_pct=0.8, upper2_pct=1.6, lower_pct=0.75)
    out = triple_barrier_labels(high, low, close, **kwargs)
    t = np.arange(out.label.size)
    assert np.all(out.decided_at > t) and np.all(out.decided_at <= t + h)
    for t0 in rng.integers(0, out.label.size, 40):
        d = out.decided_at[t0]
        h2, l2 = high.copy(), low.copy()
        h2[d + 1 :] = rng.uniform(0.5, 2.0) * close[t0]  # anything at all after d
        l2[d + 1 :] = np.minimum(h2[d + 1 :], rng.uniform(0.5, 2.0) * close[t0])
        again = triple_barrier_labels(h2, l2, close, **kwargs)
        assert again.label[t0] == out.label[t0]


def test_horizon_bars():
    assert horizon_bars(120, 60_000) == 120
    assert horizon_bars(120, 15 * 60_000) == 8
    with pytest.raises(ValueError, match="whole number"):
        horizon_bars(120, 7 * 60_000)
    with pytest.raises(ValueError):
        horizon_bars(10, 15 * 60_000)


def test_label_counts():
    assert label_counts(np.array([0, 0, 3, 1], np.int8)) == [2, 1, 0, 1]
