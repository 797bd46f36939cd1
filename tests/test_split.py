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


# ---------------------------------------------------------------------------- embargo, train_start


def test_assign_split_table_with_embargo_and_train_start() -> None:
    b = SplitBounds(100, 200, embargo_ms=20, train_start_ms=30)
    ts = np.array([10, 30, 50, 99, 100, 119, 120, 150, 199, 200, 219, 220, 300])
    he = np.array([20, 40, 99, 100, 110, 130, 150, 199, 205, 900, 230, 240, 310])
    assert assign_split(ts, he, b).tolist() == [
        PURGED,  # before train_start
        0,
        0,
        PURGED,  # its horizon reaches validation (purge)
        PURGED,  # inside the embargo after val_start
        PURGED,
        1,
        1,
        PURGED,  # its horizon reaches test (purge)
        PURGED,  # inside the embargo after test_start
        PURGED,
        2,
        2,
    ]


def test_defaults_mean_no_embargo_and_no_train_start() -> None:
    """Bounds recorded before the embargo existed split exactly as they did then."""
    rng = np.random.default_rng(0)
    ts = np.sort(rng.integers(0, 10_000, 2_000))
    he = ts + rng.integers(1, 500, len(ts))
    old = SplitBounds(4_000, 7_000)
    assert old == SplitBounds(4_000, 7_000, embargo_ms=0, train_start_ms=None)
    expected = np.full(len(ts), PURGED)
    expected[(ts < 4_000) & (he < 4_000)] = 0
    expected[(ts >= 4_000) & (ts < 7_000) & (he < 7_000)] = 1
    expected[ts >= 7_000] = 2
    assert assign_split(ts, he, old).tolist() == expected.tolist()


@pytest.mark.parametrize("seed", range(5))
def test_no_window_lies_in_an_embargo_and_no_horizon_crosses_a_boundary(seed: int) -> None:
    rng = np.random.default_rng(100 + seed)
    ts = np.sort(rng.integers(0, 100_000, 20_000))
    he = ts + rng.integers(1, 3_000, len(ts))
    embargo = int(rng.integers(1, 5_000))
    start = int(rng.integers(0, 20_000))
    b = SplitBounds(50_000, 80_000, embargo_ms=embargo, train_start_ms=start)
    code = assign_split(ts, he, b)
    v, t = b.val_start_ms, b.test_start_ms
    train, val, test = (code == s for s in (0, 1, 2))
    # Purge: each split's labels are decided before the next split starts.
    assert (he[train] < v).all() and (he[val] < t).all()
    assert (ts[train] < v).all() and (ts[val] < t).all()
    # Embargo: nothing within `embargo` after a boundary; train from train_start.
    assert not (((ts >= v) & (ts < v + embargo)) & (code >= 0)).any()
    assert not (((ts >= t) & (ts < t + embargo)) & (code >= 0)).any()
    assert (ts[train] >= start).all()
    # The samples of two splits are more than an embargo apart.
    assert ts[val].min() - ts[train].max() > embargo
    assert ts[test].min() - ts[val].max() > embargo
    # Every sample that satisfies a split's rule is in it (nothing else is dropped).
    rule_train = (ts >= start) & (ts < v) & (he < v)
    rule_val = (ts >= v + embargo) & (ts < t) & (he < t)
    rule_test = ts >= t + embargo
    assert (train == rule_train).all() and (val == rule_val).all() and (test == rule_test).all()
    assert ((code == PURGED) == ~(rule_train | rule_val | rule_test)).all()


def test_split_bounds_embargo_and_train_start() -> None:
    b = split_bounds(
        T0,
        T0 + 100 * DAY - 1,
        val_fraction=0.2,
        test_fraction=0.1,
        embargo_minutes=120,
        train_start="2024-01-21",
    )
    assert b.embargo_ms == 120 * 60_000
    assert b.train_start_ms == T0 + 20 * DAY
    # Fractions are of the time from train_start: 80 days here.
    assert b.test_start_ms == T0 + 20 * DAY + 72 * DAY
    assert b.val_start_ms == T0 + 20 * DAY + 56 * DAY
    d = b.to_dict()
    assert d["embargo_ms"] == 120 * 60_000
    assert d["train_start"] == "2024-01-21T00:00:00Z"
    assert (
        split_bounds(T0, T0 + DAY, val_fraction=0.2, test_fraction=0.1).to_dict()["train_start"]
        is None
    )


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"embargo_minutes": -1}, "data.embargo_minutes"),
        ({"train_start": "yesterday"}, "data.train_start"),
        ({"train_start": "2025-01-01"}, "data.train_start"),
        ({"train_start": "2024-03-01", "val_start": "2024-02-01"}, "data.train_start"),
    ],
)
def test_bad_embargo_or_train_start_is_a_user_error(kwargs: dict, needle: str) -> None:
    with pytest.raises(UserError, match=needle):
        split_bounds(T0, T0 + 100 * DAY, val_fraction=0.2, test_fraction=0.1, **kwargs)


def test_data_config_threads_the_embargo_and_train_start_into_the_bounds() -> None:
    from src.config import DataConfig
    from src.data.lake import bounds_from_config

    cfg = DataConfig(
        val_start="2024-02-01",
        test_start="2024-03-01",
        embargo_minutes=90,
        train_start="2024-01-15",
    )
    b = bounds_from_config(cfg)(T0, T0 + 90 * DAY)
    assert b == SplitBounds(T0 + 31 * DAY, T0 + 60 * DAY, 90 * 60_000, T0 + 14 * DAY)
    with pytest.raises(ValueError, match="data.embargo_minutes"):
        DataConfig(embargo_minutes=-5)


def test_the_sidecar_records_the_new_fields_and_reads_them_back(tmp_path) -> None:
    """`sidecar_for` writes `dataclasses.asdict(bounds)`; `split_bounds_of` reads it, and
    a sidecar written before the embargo existed reads as no embargo, no train start."""
    import dataclasses

    from src.modelling.evaluation.inference import split_bounds_of

    b = SplitBounds(T0 + 31 * DAY, T0 + 60 * DAY, 90 * 60_000, T0 + 14 * DAY)
    assert split_bounds_of({"split": dataclasses.asdict(b)}, tmp_path) == b
    old = {"split": {"val_start_ms": b.val_start_ms, "test_start_ms": b.test_start_ms}}
    assert split_bounds_of(old, tmp_path) == SplitBounds(b.val_start_ms, b.test_start_ms)


def test_the_normaliser_fits_on_the_training_range_only(tiny_lake) -> None:
    """With a train_start, rows before it do not touch the statistics."""
    import pyarrow.parquet as pq

    from src.core import constants as C
    from src.data.lake import scan_lake
    from src.data.normalize import fit_normalizer

    probe = scan_lake(tiny_lake, seq_len=8, max_gap_bars=1.5, bounds=SplitBounds(2**62, 2**62))
    span = probe.t_max_ms - probe.t_min_ms
    b = SplitBounds(
        probe.t_min_ms + span // 2, probe.t_min_ms + 3 * span // 4, 0, probe.t_min_ms + span // 4
    )
    index = scan_lake(tiny_lake, seq_len=8, max_gap_bars=1.5, bounds=b)
    norm = fit_normalizer(index)
    import pyarrow as pa

    table = pa.concat_tables(
        pq.read_table(f.path, columns=[C.TIMESTAMP_COL, *index.feature_names]) for f in index.files
    )
    ts = table.column(C.TIMESTAMP_COL).cast("int64").to_numpy()
    keep = (ts >= b.train_start_ms) & (ts < b.val_start_ms)
    block = np.stack([table.column(n).to_numpy() for n in index.feature_names], axis=1)[keep]
    assert norm.n_rows == keep.sum()
    np.testing.assert_allclose(norm.mean, block.astype(np.float64).mean(axis=0), rtol=1e-9)


def test_checkpoints_and_states_from_before_the_embargo_stay_comparable() -> None:
    """A best checkpoint or `last` state written before these settings existed is compared
    as one with no embargo and no training start (the shared best can still be replaced,
    a run can still resume)."""
    import dataclasses

    from src.config import Config
    from src.modelling.checkpointing.fingerprint import result_fingerprint
    from src.modelling.checkpointing.sidecar import comparable_part

    new = {"split": dataclasses.asdict(SplitBounds(100, 200))}
    old = {"split": {"val_start_ms": 100, "test_start_ms": 200}}
    assert comparable_part(old) == comparable_part(new)
    embargoed = {"split": dataclasses.asdict(SplitBounds(100, 200, embargo_ms=5))}
    assert comparable_part(old) != comparable_part(embargoed)

    class Data:
        summary = {"files": 1, "rows": 10}

    flat = result_fingerprint(Config(), Data())
    assert "data.embargo_minutes" not in flat and "data.train_start" not in flat
    cfg = Config()
    cfg.data.embargo_minutes, cfg.data.train_start = 60, "2024-01-01"
    flat = result_fingerprint(cfg, Data())
    assert flat["data.embargo_minutes"] == 60 and flat["data.train_start"] == "2024-01-01"
