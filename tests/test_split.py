"""Chronological split bounds and the purge rule, as properties over random samples."""

from __future__ import annotations

import math

import numpy as np
import pytest

from src.core.errors import UserError
from src.data.split import (
    PURGED,
    SPLITS,
    SplitBounds,
    assign_split,
    parse_date_ms,
    split_bounds,
    split_index,
)

DAY = 86_400_000
T0 = parse_date_ms("2024-01-01", "t0")


def test_fraction_bounds_cut_the_time_range() -> None:
    b = split_bounds(0, 999, val_fraction=0.2, test_fraction=0.1)
    assert (b.val_start_ms, b.test_start_ms) == (700, 900)


def test_zero_fraction_gives_an_empty_split_not_a_one_bar_one() -> None:
    b = split_bounds(0, 999, val_fraction=0.2, test_fraction=0.0)
    assert b.test_start_ms == 1000  # after the last bar
    ts = np.arange(1000)
    assert not (assign_split(ts, ts + 1, b) == 2).any()
    b = split_bounds(0, 999, val_fraction=0.0, test_fraction=0.3)
    assert b.val_start_ms == b.test_start_ms


def test_dates_override_fractions_and_naive_dates_are_utc() -> None:
    b = split_bounds(
        T0, T0 + 100 * DAY, val_fraction=0.5, test_fraction=0.1, val_start="2024-02-01"
    )
    assert b.val_start_ms == T0 + 31 * DAY
    assert b.test_start_ms == T0 + math.ceil((100 * DAY + 1) * 0.9)  # of [t_min, t_max + 1 ms)
    b = split_bounds(
        T0,
        T0 + 100 * DAY,
        val_fraction=0.2,
        test_fraction=0.1,
        val_start="2024-01-10T00:00:00+00:00",
        test_start="2024-01-20T00:00Z",
    )
    assert (b.val_start_ms, b.test_start_ms) == (T0 + 9 * DAY, T0 + 19 * DAY)


def test_test_date_alone_keeps_the_validation_share_before_it() -> None:
    b = split_bounds(
        T0, T0 + 100 * DAY - 1, val_fraction=0.2, test_fraction=0.1, test_start="2024-03-01"
    )
    assert b.test_start_ms == T0 + 60 * DAY
    assert b.val_start_ms == T0 + 40 * DAY


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"val_start": "March 1st"}, "data.val_start"),
        ({"val_start": "2024-03-01", "test_start": "2024-02-01"}, "before test"),
        ({"val_fraction": 0.6, "test_fraction": 0.5}, "leave time"),
    ],
)
def test_bad_settings_raise_a_user_error(kwargs: dict, needle: str) -> None:
    args = {"val_fraction": 0.2, "test_fraction": 0.1, **kwargs}
    with pytest.raises(UserError, match=needle):
        split_bounds(T0, T0 + 100 * DAY, **args)
    with pytest.raises(ValueError):  # also a ValueError, as config errors are
        split_bounds(T0, T0 + 100 * DAY, **args)


def test_assign_split_table() -> None:
    b = SplitBounds(100, 200)
    ts = np.array([10, 10, 99, 100, 150, 150, 199, 200, 250])
    he = np.array([50, 100, 99 + 1, 120, 199, 200, 260, 900, 260])
    assert assign_split(ts, he, b).tolist() == [0, PURGED, PURGED, 1, 1, PURGED, PURGED, 2, 2]
    assert assign_split(ts, he, b).dtype == np.int8


@pytest.mark.parametrize("seed", range(5))
def test_no_label_horizon_crosses_a_split_boundary(seed: int) -> None:
    rng = np.random.default_rng(seed)
    ts = np.sort(rng.integers(0, 10_000, 5_000))
    he = ts + rng.integers(1, 500, len(ts))
    b = split_bounds(int(ts.min()), int(ts.max()), val_fraction=0.2, test_fraction=0.15)
    code = assign_split(ts, he, b)
    starts = [b.val_start_ms, b.test_start_ms]
    for s in (0, 1):
        # Inputs and label of a sample lie before the next split starts.
        assert (ts[code == s] < starts[s]).all() and (he[code == s] < starts[s]).all()
    assert (ts[code == 1] >= b.val_start_ms).all() and (ts[code == 2] >= b.test_start_ms).all()
    # Chronological: every train sample is before every validation one, and so on.
    assert ts[code == 0].max() < ts[code == 1].min() <= ts[code == 1].max() < ts[code == 2].min()
    # Purged samples are exactly those whose horizon reaches into the next split.
    purged = code == PURGED
    assert purged.sum() > 0
    assert ((ts[purged] < b.val_start_ms) & (he[purged] >= b.val_start_ms)).sum() + (
        (ts[purged] >= b.val_start_ms)
        & (ts[purged] < b.test_start_ms)
        & (he[purged] >= b.test_start_ms)
    ).sum() == purged.sum()


def test_split_names() -> None:
    assert SPLITS == ("train", "val", "test")
    assert [split_index(s) for s in SPLITS] == [0, 1, 2]
    with pytest.raises(ValueError, match="unknown split"):
        split_index("validation")
