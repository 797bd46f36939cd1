"""Hierarchical triple-barrier labels: every rule on hand-built paths, a time-true
horizon across gaps, plus properties against a per-bar reference."""

from __future__ import annotations

import numpy as np
import pytest

from src.data.labels import (
    LONG,
    NEUTRO,
    STOP,
    SUPERLONG,
    barrier_trades,
    causal_volatility,
    horizon_moves,
    label_counts,
    labels_and_trades,
    triple_barrier_labels,
)

MIN = 60_000
BARRIERS = dict(upper1=0.008, upper2=0.016, lower=0.0075)


def minutes(n: int) -> np.ndarray:
    return np.arange(n, dtype=np.int64) * MIN


def labels(high, low, close, horizon, ts=None):
    ts = minutes(len(close)) if ts is None else ts
    return triple_barrier_labels(ts, high, low, close, horizon_ms=horizon * MIN, **BARRIERS)


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
    out = labels(high, low, close, horizon)
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
    out = labels(high, low, np.full(2, 100.0), 1)
    assert out.label.tolist() == [LONG]


def test_only_bars_with_a_full_horizon_are_labelled():
    for n, expected in ((3, 0), (4, 0), (5, 1), (9, 5)):
        high = low = close = np.full(n, 100.0)
        out = labels(high, low, close, 4)
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
    out = labels(high, low, close, 12)
    ref_label, ref_decided = _reference(high, low, close, 12, 0.8, 1.6, 0.75)
    np.testing.assert_array_equal(out.label, ref_label)
    np.testing.assert_array_equal(out.decided_at, ref_decided)
    assert set(np.unique(out.label)) == {NEUTRO, STOP, LONG, SUPERLONG}  # all rules exercised


def test_decided_at_is_within_the_horizon_and_honest():
    """t < decided_at <= t + H, and bars after decided_at cannot change the label."""
    rng = np.random.default_rng(5)
    high, low, close = _random_path(rng, 800)
    h = 20
    out = labels(high, low, close, h)
    t = np.arange(out.label.size)
    assert np.all(out.decided_at > t) and np.all(out.decided_at <= t + h)
    for t0 in rng.integers(0, out.label.size, 40):
        d = out.decided_at[t0]
        h2, l2 = high.copy(), low.copy()
        h2[d + 1 :] = rng.uniform(0.5, 2.0) * close[t0]  # anything at all after d
        l2[d + 1 :] = np.minimum(h2[d + 1 :], rng.uniform(0.5, 2.0) * close[t0])
        again = labels(h2, l2, close, h)
        assert again.label[t0] == out.label[t0]


def _time_reference(ts, high, low, close, horizon_ms):
    """Per-bar loop over time: the bars with open time in (ts[t], ts[t] + horizon]."""
    out = []
    for t in np.flatnonzero(ts + horizon_ms <= ts[-1]):
        c = close[t]
        u1, u2, lo = c * 1.008, c * 1.016, c * (1 - 0.0075)
        label, seen_u1 = NEUTRO, False
        for k in np.flatnonzero((ts > ts[t]) & (ts <= ts[t] + horizon_ms)):
            if low[k] <= lo:
                label = LONG if seen_u1 else STOP
                break
            if high[k] >= u2:
                label = SUPERLONG
                break
            if high[k] >= u1:
                seen_u1, label = True, LONG
        out.append(label)
    return np.array(out)


@pytest.mark.parametrize("seed", [0, 1])
def test_time_true_horizon_equals_reference_on_gappy_bars(seed):
    """Missing bars (quiet minutes, outages) shorten what the horizon holds, never
    stretch it: the same answer as a loop over time."""
    rng = np.random.default_rng(seed)
    high, low, close = _random_path(rng, 900)
    ts = np.sort(rng.choice(3000, 900, replace=False)).astype(np.int64) * MIN
    out = labels(high, low, close, 12, ts=ts)
    np.testing.assert_array_equal(out.label, _time_reference(ts, high, low, close, 12 * MIN))
    assert set(np.unique(out.label)) == {NEUTRO, STOP, LONG, SUPERLONG}


def test_an_outage_never_decides_a_label_days_later():
    """A 3-day hole in 1-minute bars: a bar before it sees only the bars of its own
    2 hours; the crash after the outage is not its Stop."""
    n = 400
    ts = minutes(n)
    ts[200:] += 3 * 24 * 60 * MIN  # the exchange was down for 3 days
    close = np.full(n, 100.0)
    high, low = close + 0.1, close - 0.1
    low[200:] = 90.0  # after the outage the market had fallen 10%
    out = labels(high, low, close, 120, ts=ts)
    assert out.label[150] == NEUTRO and out.decided_ms[150] == ts[150] + 120 * MIN
    assert out.decided_at[150] == 199  # the last bar inside its horizon
    assert np.all(out.label[80:200] == NEUTRO)
    assert np.all(out.decided_ms - ts[: out.label.size] <= 120 * MIN)
    assert out.label[200] == STOP  # after the outage, the fall is real


def test_decided_ms_is_the_touch_or_the_vertical_barrier():
    out = labels(*_path_of([QUIET, LOW, QUIET, QUIET]), 4)
    assert out.decided_ms[0] == 2 * MIN
    out = labels(*_path_of([QUIET] * 4), 4)
    assert out.decided_ms[0] == 4 * MIN


def _path_of(bars):
    high = np.array([100.0] + [h for h, _ in bars])
    low = np.array([100.0] + [lo for _, lo in bars])
    return high, low, np.full(len(high), 100.0)


def test_per_bar_barriers_follow_the_arrays():
    high, low, close = _path_of([U1, QUIET, QUIET])
    ts = minutes(4)
    wide = triple_barrier_labels(
        ts, high, low, close, horizon_ms=3 * MIN, upper1=[0.05], upper2=[0.1], lower=[0.05]
    )
    assert wide.label.tolist() == [NEUTRO]


def test_causal_volatility_is_trailing_rms():
    rng = np.random.default_rng(3)
    close = 100 * np.exp(np.cumsum(rng.standard_normal(300) * 0.01))
    vol = causal_volatility(minutes(300), close, 20)
    r = np.diff(np.log(close))
    assert np.isnan(vol[:20]).all()
    np.testing.assert_allclose(vol[20], np.sqrt(np.mean(r[:20] ** 2)))
    np.testing.assert_allclose(vol[150], np.sqrt(np.mean(r[130:150] ** 2)))
    future = close.copy()
    future[151:] *= 3.0  # a later jump never changes an earlier estimate
    np.testing.assert_array_equal(causal_volatility(minutes(300), future, 20)[:151], vol[:151])


def test_horizon_moves():
    high, low, close = _path_of([QUIET, U2, LOW, (130.0, 50.0)])
    up, down = horizon_moves(minutes(5), high, low, close, horizon_ms=3 * MIN, rows=np.array([0]))
    np.testing.assert_allclose(up, [0.017])
    np.testing.assert_allclose(down, [0.008])


def trades_of(bars, opens=None, horizon=None):
    """Trades entered at bar 0 (close 100) followed by `bars` (high, low); the closes of
    the later bars are 100.1 unless a bar's range says otherwise."""
    high, low, close = _path_of(bars)
    close[1:] = np.clip(100.1, low[1:], high[1:])
    open_ = close.copy() if opens is None else np.array([100.0, *opens])
    horizon = len(bars) if horizon is None else horizon
    out = barrier_trades(
        minutes(len(close)), open_, high, low, close, horizon_ms=horizon * MIN, **BARRIERS
    )
    return {
        k: (int(out.exit_bar[k][0]), round(float(out.gross_return[k][0]), 10)) for k in out.exit_bar
    }


def test_barrier_trades_exit_where_the_labels_decide():
    # U1 at bar 2: the long takes profit at U1 (+0.8%); the superlong rides to the
    # horizon close (100.1); the short is stopped at U1.
    assert trades_of([QUIET, U1, QUIET]) == {
        "long": (2, 0.008),
        "superlong": (3, 0.001),
        "short": (2, -0.008),
    }
    # U2 then: the superlong takes +1.6% at bar 2.
    assert trades_of([U1, U2, QUIET])["superlong"] == (2, 0.016)
    # The lower barrier first: longs stop at -0.75%, the short takes +0.75%.
    assert trades_of([LOW, U2]) == {
        "long": (1, -0.0075),
        "superlong": (1, -0.0075),
        "short": (1, 0.0075),
    }
    # A bar touching U1 and L: the stop for both sides, as in the labels.
    assert trades_of([U1_AND_LOW]) == {
        "long": (1, -0.0075),
        "superlong": (1, -0.0075),
        "short": (1, -0.008),
    }


def test_a_gap_through_the_stop_fills_at_the_open():
    # Bar 1 opens at 98 (below L = 99.25): the long's stop fills at 98, not 99.25.
    gap = (98.5, 97.5)
    assert trades_of([gap], opens=[98.0])["long"] == (1, -0.02)
    # A gap up through U1 stops the short at the open (101), past its barrier (100.8).
    assert trades_of([(101.5, 100.9)], opens=[101.0])["short"] == (1, -0.01)


def test_labels_and_trades_is_both_in_one_pass():
    rng = np.random.default_rng(4)
    high, low, close = _random_path(rng, 700)
    ts = minutes(700)
    open_ = np.concatenate(([100.0], close[:-1]))
    kwargs = dict(horizon_ms=15 * MIN, **BARRIERS)
    lab, tr = labels_and_trades(ts, open_, high, low, close, **kwargs)
    alone = barrier_trades(ts, open_, high, low, close, **kwargs)
    np.testing.assert_array_equal(
        lab.label, triple_barrier_labels(ts, high, low, close, **kwargs).label
    )
    for k in alone.exit_bar:
        np.testing.assert_array_equal(tr.exit_bar[k], alone.exit_bar[k])
        np.testing.assert_array_equal(tr.gross_return[k], alone.gross_return[k])
    # The long's outcome agrees with the label: a Long/SuperLong label is a take
    # profit (+0.8%) unless the bar gapped, a Stop label is a loss.
    np.testing.assert_allclose(tr.gross_return["long"][lab.label >= LONG], 0.008, rtol=1e-9)
    assert (tr.gross_return["long"][lab.label == STOP] < 0).all()


def test_label_counts():
    assert label_counts(np.array([0, 0, 3, 1], np.int8)) == [2, 1, 0, 1]
