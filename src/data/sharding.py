"""Dealing windows to (rank, worker) pairs and planning batches (pure numpy, no I/O).

One epoch of one split is a single global stream of windows: the work units (Parquet
row groups) in the epoch's order (shuffled from (seed, epoch) for training, fixed
otherwise), each contributing its windows of the split. From that stream:

1. every rank takes a contiguous share of floor(N / world_size) windows; the N mod
   world_size windows at the end are dropped, so all ranks run the same number of
   batches and DDP can never wait for a rank that has run out;
2. a rank's share is cut into batches, and the batches are dealt to the rank's
   DataLoader workers in contiguous runs (the first workers get one more when they do
   not divide evenly), so a worker reads only the units its run touches;
3. inside a worker, `plan_batches` decides which windows make each batch: in order,
   or drawn at random from a bounded pool of units in flight (the shuffle buffer).

The DataLoader takes batches from its workers round-robin, in worker order, skipping
a worker once it is exhausted. With the run sizes of step 2, the k-th batch of an
epoch (0-based) therefore comes from worker k % num_workers; `consumed_per_worker`
and `logical_worker` use that to resume exactly in the middle of an epoch.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

# Mixed into the unit-order seed so it never coincides with a worker's shuffle seed.
_UNIT_ORDER_SALT = 0x5A1


def unit_order(n_units: int, *, shuffle: bool, seed: int, epoch: int) -> np.ndarray:
    """Order in which an epoch visits the units: a permutation from (seed, epoch), or 0..n-1.

    Every rank and worker computes the same order, which is what lets them agree on a
    global stream without talking to each other.
    """
    if not shuffle:
        return np.arange(n_units, dtype=np.int64)
    rng = np.random.default_rng([_UNIT_ORDER_SALT, seed, epoch])
    return rng.permutation(n_units).astype(np.int64)


def rank_range(total: int, rank: int, world_size: int) -> tuple[int, int]:
    """The [start, stop) of the global stream that `rank` reads: floor(total / world_size) each."""
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is outside world size {world_size}")
    share = total // world_size
    return rank * share, (rank + 1) * share


def num_batches(n_windows: int, batch_size: int, *, drop_last: bool) -> int:
    """Batches a rank makes of its windows (the last one partial unless `drop_last`)."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    return n_windows // batch_size if drop_last else -(-n_windows // batch_size)


def worker_batch_range(n_batches: int, num_workers: int, worker: int) -> tuple[int, int]:
    """The contiguous run [start, stop) of a rank's batches that `worker` produces.

    The first n_batches % num_workers workers get one batch more, which keeps the
    DataLoader's round-robin order equal to "batch k comes from worker k % num_workers".
    """
    if not 0 <= worker < num_workers:
        raise ValueError(f"worker {worker} is outside {num_workers} workers")
    base, extra = divmod(n_batches, num_workers)
    start = worker * base + min(worker, extra)
    return start, start + base + (1 if worker < extra else 0)


def consumed_per_worker(consumed: int, num_workers: int) -> np.ndarray:
    """Batches each worker had given when the DataLoader had yielded `consumed` in total."""
    workers = np.arange(num_workers)
    return consumed // num_workers + (workers < consumed % num_workers).astype(np.int64)


def logical_worker(physical: int, num_workers: int, consumed: int) -> int:
    """Which worker's run a DataLoader worker produces when resuming after `consumed` batches.

    A fresh DataLoader asks worker 0 first; the uninterrupted epoch would next have
    asked worker consumed % num_workers. Rotating the roles makes the resumed order
    identical to the uninterrupted one, not just the same set of batches.
    """
    return (physical + consumed) % num_workers


def stream_segments(
    counts: np.ndarray, start: int, stop: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cut the window range [start, stop) of a stream of units into per-unit segments.

    `counts[i]` is the number of windows the i-th unit of the stream contributes.
    Returns (position in the stream, first window, end window) per touched unit, the
    window numbers being ordinals inside that unit.
    """
    counts = np.asarray(counts, dtype=np.int64)
    ends = np.cumsum(counts)
    begins = ends - counts
    lo = np.maximum(start - begins, 0)
    hi = np.minimum(stop - begins, counts)
    keep = np.flatnonzero(hi > lo)
    return keep, lo[keep], hi[keep]


def batch_sizes(n_windows: int, batch_size: int) -> np.ndarray:
    """Sizes of the batches `n_windows` consecutive windows make (the last may be short)."""
    full, rest = divmod(n_windows, batch_size)
    return np.array([batch_size] * full + ([rest] if rest else []), dtype=np.int64)


@dataclass(frozen=True)
class BatchPlan:
    """Which windows make one batch, and which segments are done after it."""

    groups: tuple[tuple[int, np.ndarray], ...]
    """(segment, window ordinals inside the segment) pairs, each segment at most once."""
    released: tuple[int, ...]
    """Segments whose windows are all used once their group is copied: free them right then,
    which keeps at most `units_in_flight` segments loaded at any moment."""

    @property
    def size(self) -> int:
        return int(sum(len(ords) for _, ords in self.groups))


def plan_batches(
    segment_sizes: Sequence[int] | np.ndarray,
    sizes: Sequence[int] | np.ndarray,
    *,
    units_in_flight: int,
    rng: np.random.Generator | None,
) -> Iterator[BatchPlan]:
    """Plan batches over consecutive segments, holding at most `units_in_flight` at once.

    With `rng=None` windows are taken in stream order. With a generator, each batch is
    drawn uniformly without replacement from the not-yet-used windows of the segments
    in flight (the shuffle buffer); a segment joins the pool when one leaves it. The
    batch sizes must use up the segments exactly. The plan needs only window counts,
    so a resume can run through consumed batches without reading any data.
    """
    if units_in_flight < 1:
        raise ValueError(f"units_in_flight must be >= 1, got {units_in_flight}")
    seg_sizes = np.asarray(segment_sizes, dtype=np.int64)
    wanted, held = int(np.sum(sizes)), int(seg_sizes.sum())
    if wanted != held:
        raise ValueError(f"batches take {wanted} windows but the segments hold {held}")
    pool: list[int] = []
    used: dict[int, int] = {}
    perms: dict[int, np.ndarray] = {}
    next_seg = 0

    def top_up() -> None:
        nonlocal next_seg
        while len(pool) < units_in_flight and next_seg < len(seg_sizes):
            seg = next_seg
            next_seg += 1
            if seg_sizes[seg] == 0:
                continue
            pool.append(seg)
            used[seg] = 0
            if rng is not None:
                perms[seg] = rng.permutation(int(seg_sizes[seg]))

    for size in sizes:
        need = int(size)
        groups: list[tuple[int, np.ndarray]] = []
        released: list[int] = []
        while need > 0:
            top_up()
            remaining = np.array([seg_sizes[s] - used[s] for s in pool], dtype=np.int64)
            if rng is None:
                take = np.zeros(len(pool), dtype=np.int64)
                take[0] = min(need, int(remaining[0]))
            else:
                take = rng.multivariate_hypergeometric(remaining, min(need, int(remaining.sum())))
            for seg, k in zip(list(pool), take.tolist(), strict=True):
                if k == 0:
                    continue
                u = used[seg]
                ords = np.arange(u, u + k, dtype=np.int64) if rng is None else perms[seg][u : u + k]
                groups.append((seg, ords))
                used[seg] = u + k
                need -= k
                if used[seg] == seg_sizes[seg]:
                    pool.remove(seg)
                    perms.pop(seg, None)
                    released.append(seg)
        yield BatchPlan(groups=tuple(groups), released=tuple(released))
