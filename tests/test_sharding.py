"""Properties of dealing windows to ranks and workers, and of the batch plans."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from src.data import sharding as S


def test_unit_order_is_a_seeded_permutation_per_epoch() -> None:
    a = S.unit_order(50, shuffle=True, seed=3, epoch=0)
    assert sorted(a.tolist()) == list(range(50))
    assert (a == S.unit_order(50, shuffle=True, seed=3, epoch=0)).all()
    assert (a != S.unit_order(50, shuffle=True, seed=3, epoch=1)).any()
    assert (a != S.unit_order(50, shuffle=True, seed=4, epoch=0)).any()
    assert S.unit_order(5, shuffle=False, seed=3, epoch=9).tolist() == [0, 1, 2, 3, 4]


@pytest.mark.parametrize(("total", "world"), [(10, 1), (10, 3), (7, 2), (2, 4)])
def test_rank_ranges_are_disjoint_equal_and_drop_only_the_remainder(total: int, world: int) -> None:
    ranges = [S.rank_range(total, r, world) for r in range(world)]
    assert len({hi - lo for lo, hi in ranges}) == 1
    covered = [i for lo, hi in ranges for i in range(lo, hi)]
    assert covered == list(range(total - total % world))


@pytest.mark.parametrize(("n", "k"), [(0, 2), (1, 2), (7, 3), (9, 3), (10, 4), (3, 5)])
def test_worker_runs_are_contiguous_and_front_loaded(n: int, k: int) -> None:
    runs = [S.worker_batch_range(n, k, w) for w in range(k)]
    assert runs[0][0] == 0 and runs[-1][1] == n
    assert all(a[1] == b[0] for a, b in itertools.pairwise(runs))
    sizes = [hi - lo for lo, hi in runs]
    assert sizes == sorted(sizes, reverse=True) and max(sizes) - min(sizes) <= 1


def dataloader_order(counts: list[int], first: int = 0) -> list[tuple[int, int]]:
    """(worker, batch number) in the order torch's DataLoader yields IterableDataset batches:
    round-robin from worker `first`, skipping workers that are exhausted."""
    k = len(counts)
    given = [0] * k
    out = []
    w = first
    while sum(given) < sum(counts):
        if given[w] < counts[w]:
            out.append((w, given[w]))
            given[w] += 1
        w = (w + 1) % k
    return out


@pytest.mark.parametrize(("n", "k"), [(7, 3), (9, 3), (5, 1), (3, 5), (11, 2)])
def test_resume_rotation_reproduces_the_uninterrupted_order(n: int, k: int) -> None:
    counts = [hi - lo for lo, hi in (S.worker_batch_range(n, k, w) for w in range(k))]
    full = dataloader_order(counts)
    assert [w for w, _ in full] == [i % k for i in range(n)]
    for consumed in range(n + 1):
        per_worker = S.consumed_per_worker(consumed, k)
        assert per_worker.tolist() == [
            sum(1 for w, _ in full[:consumed] if w == x) for x in range(k)
        ]
        # A fresh DataLoader asks physical workers 0, 1, ...; physical p plays logical
        # worker (p + consumed) % k and skips what that worker already gave.
        remaining = [
            counts[S.logical_worker(p, k, consumed)] - per_worker[S.logical_worker(p, k, consumed)]
            for p in range(k)
        ]
        resumed = [
            (S.logical_worker(p, k, consumed), per_worker[S.logical_worker(p, k, consumed)] + i)
            for p, i in dataloader_order(remaining)
        ]
        assert resumed == full[consumed:]


def test_stream_segments_cover_the_range_exactly() -> None:
    counts = np.array([5, 0, 3, 7, 1])
    stream = [(u, i) for u, c in enumerate(counts) for i in range(c)]
    for lo in range(len(stream) + 1):
        for hi in range(lo, len(stream) + 1):
            pos, a, b = S.stream_segments(counts, lo, hi)
            got = [(int(u), i) for u, x, y in zip(pos, a, b, strict=True) for i in range(x, y)]
            assert got == stream[lo:hi]


def test_num_batches_and_sizes() -> None:
    assert S.num_batches(10, 4, drop_last=False) == 3
    assert S.num_batches(10, 4, drop_last=True) == 2
    assert S.batch_sizes(10, 4).tolist() == [4, 4, 2]
    assert S.batch_sizes(8, 4).tolist() == [4, 4]


def _run_plan(seg_sizes, sizes, units, rng):
    """Execute a plan like the reader does (load on first use, free after the last group of
    a released segment); return the batches and the most segments loaded at once."""
    loaded: set[int] = set()
    most = 0
    batches = []
    for plan in S.plan_batches(seg_sizes, sizes, units_in_flight=units, rng=rng):
        segs = [s for s, _ in plan.groups]
        assert len(segs) == len(set(segs))
        for seg in segs:
            loaded.add(seg)
            most = max(most, len(loaded))
            if seg in plan.released:
                loaded.discard(seg)
        batches.append([(s, int(o)) for s, ords in plan.groups for o in ords])
    assert not loaded
    return batches, most


@pytest.mark.parametrize("units", [1, 2, 4])
@pytest.mark.parametrize("shuffle", [False, True])
def test_plan_uses_every_window_once_within_the_buffer(units: int, shuffle: bool) -> None:
    seg_sizes = [13, 2, 0, 40, 7, 25]
    total = sum(seg_sizes)
    sizes = S.batch_sizes(total, 8)
    rng = np.random.default_rng(1) if shuffle else None
    batches, most = _run_plan(seg_sizes, sizes, units, rng)
    assert [len(b) for b in batches] == sizes.tolist()
    flat = [w for b in batches for w in b]
    assert sorted(flat) == [(s, i) for s, n in enumerate(seg_sizes) for i in range(n)]
    assert most <= units
    if not shuffle:
        assert flat == sorted(flat)  # stream order
    else:
        assert flat != sorted(flat)


def test_plan_is_deterministic_and_shuffles_across_units() -> None:
    seg_sizes = [100, 100, 100, 100]
    a, _ = _run_plan(seg_sizes, S.batch_sizes(400, 20), 4, np.random.default_rng(5))
    b, _ = _run_plan(seg_sizes, S.batch_sizes(400, 20), 4, np.random.default_rng(5))
    assert a == b
    # With four units in flight, the first batch mixes windows of several units.
    assert len({s for s, _ in a[0]}) > 1


def test_plan_needs_exactly_the_windows_of_its_segments() -> None:
    with pytest.raises(ValueError, match="windows"):
        list(S.plan_batches([3], [4], units_in_flight=1, rng=None))
    with pytest.raises(ValueError, match="windows"):
        list(S.plan_batches([3, 3], [4], units_in_flight=1, rng=None))
