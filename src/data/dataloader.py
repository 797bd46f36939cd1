"""Streaming window dataset over the processed lake, and the loader builders.

`StreamingWindowDataset` is an `IterableDataset` that yields whole batches
`(x, y)` (or `(x, y, ids)`): x float32 (B, seq_len, F) contiguous, y int64 (B,),
ids int64 (B,) = file_index * 2**32 + row of the window's last bar. Use it through
`make_loader` (a `DataLoader` with `batch_size=None`).

How an epoch is produced (see `src.data.sharding` for the pure parts):

- the split's units (row groups holding at least one of its windows) are put in the
  epoch's order: shuffled from (seed, epoch) for training, fixed for validation/test;
- this forms one global stream of N windows; every rank reads a contiguous share of
  floor(N / world_size) windows (the remainder is dropped and counted), cut into
  batches, so `len(dataset)` is the same on every rank and known before the epoch;
- a rank's batches are dealt in contiguous runs to its DataLoader workers, so each
  worker reads only the units its run touches;
- a worker draws its batches from a pool of `units_in_flight` units (the shuffle
  buffer) following a pure plan; a unit is read (with its halo, normalised once) when
  the plan first needs it and dropped when its windows are used up. Memory is bounded
  by units_in_flight x row group size per worker, whatever the lake's size;
- a batch is one gather (`index_select` over an overlapping-window view of a unit's
  features) per unit it draws from, straight into a fresh contiguous tensor. With
  `StreamingLoader` workers, the workers read and normalise units and send each unit
  once plus small per-batch "recipes", and the gather runs in the main process: that
  costs it far less than receiving a finished batch through shared memory. Recipes
  travel in bundles of up to `RECIPES_PER_ITEM`, and the loader puts them back into
  the one-batch round-robin order of the workers, so the order does not depend on it.

Position and resume: `state_dict()` is `{"epoch", "batches"}` plus the layout it is
valid for (split, world size, workers, batches per epoch). `load_state_dict()` makes
the next iteration of that epoch yield exactly the batches an uninterrupted epoch
would still have yielded, in the same order, without reading consumed units (the
plan is fast-forwarded). The epoch and resume point reach DataLoader workers,
persistent ones included, through a small shared-memory tensor.
"""

from __future__ import annotations

import itertools
import logging
import warnings
from collections import defaultdict, deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from src.core.errors import DataError
from src.data import sharding
from src.data.lake import FileCache, LakeIndex, read_unit, scan_lake_for
from src.data.normalize import Gather, Normalizer, fit_normalizer
from src.data.split import SPLITS, SplitBounds, iso, split_index

log = logging.getLogger(__name__)

Batch = tuple[torch.Tensor, ...]

RECIPES_PER_ITEM = 16
"""Batch recipes a `StreamingLoader` worker sends per DataLoader item. Each item has a
fixed cost (worker loop, queue, pipe, pickling: about 0.25 ms here), which one item per
batch paid for every batch; a bundle pays it once per 16. Bounded, so that units reach
the main process at most 16 batches before they are needed."""


@dataclass
class _Segment:
    """A loaded unit, restricted to the windows one worker uses from it."""

    features: torch.Tensor
    """(halo + rows, F) normalised features."""
    meta: np.ndarray
    """(3, W) int64: window start row in `features`, label, id of each window."""

    _windows: torch.Tensor | None = field(default=None, init=False, repr=False)

    def windows(self, seq_len: int) -> torch.Tensor:
        """(rows - seq_len + 1, seq_len, F) view: every feature row starts an overlapping
        window, so gathering windows needs no copy of the unit."""
        if self._windows is None:
            rows, n_feat = self.features.shape
            self._windows = self.features.as_strided(
                (rows - seq_len + 1, seq_len, n_feat), (n_feat, n_feat, 1)
            )
        return self._windows

    @property
    def starts(self) -> np.ndarray:
        return self.meta[0]

    @property
    def labels(self) -> np.ndarray:
        return self.meta[1]

    @property
    def ids(self) -> np.ndarray:
        return self.meta[2]

    def __reduce__(self) -> tuple[Any, ...]:
        # Between processes both parts travel as shared-memory tensors: large pickled
        # bytes through the pipe would fragment the receiving process's heap.
        return (_segment_from_tensors, (self.features, torch.from_numpy(self.meta)))


def _segment_from_tensors(features: torch.Tensor, meta: torch.Tensor) -> _Segment:
    return _Segment(features, meta.numpy())


@dataclass
class _Recipe:
    """One batch as a DataLoader worker describes it to a `StreamingLoader`.

    Shipping a finished batch costs the main process a shared-memory tensor per batch
    (about 0.5 ms each, whatever its size), more than building it. A recipe instead
    carries the units the batch is the first to use (once per unit) and the window
    numbers; the loader gathers the batch in the main process (tens of microseconds).
    """

    worker: int
    new: dict[int, _Segment]
    groups: tuple[tuple[int, np.ndarray], ...]
    released: tuple[int, ...]


class StreamingWindowDataset(IterableDataset):
    """Batches of windows of one split, streamed unit by unit; see the module docstring."""

    def __init__(
        self,
        index: LakeIndex,
        split: str,
        *,
        batch_size: int,
        normalizer: Normalizer,
        shuffle: bool,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        units_in_flight: int = 4,
        pin_memory: bool = False,
        with_ids: bool = False,
        drop_last: bool = False,
    ) -> None:
        super().__init__()
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"bad rank {rank} for world size {world_size}")
        if batch_size < 1 or units_in_flight < 1:
            raise ValueError("batch_size and units_in_flight must be >= 1")
        normalizer.check_features(index.feature_names, str(index.data_dir))
        self.index = index
        self.split = split
        self.split_id = split_index(split)
        self.batch_size = batch_size
        self.normalizer = normalizer
        self.shuffle = shuffle
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.units_in_flight = units_in_flight
        self.pin_memory = pin_memory
        self.with_ids = with_ids
        self.drop_last = drop_last

        counts = index.units.windows[:, self.split_id]
        self._units = np.flatnonzero(counts > 0)
        self._counts = counts[self._units]
        self.num_windows = int(self._counts.sum())
        if self.num_windows == 0:
            raise DataError(_empty_split_message(index, split))
        share = self.num_windows // world_size
        self._n_batches = sharding.num_batches(share, batch_size, drop_last=drop_last)
        if self._n_batches == 0:
            raise DataError(
                f"{index.data_dir}: the {split} split has {self.num_windows} windows, fewer than "
                f"one {'full batch' if drop_last else 'window'} per rank ({world_size} ranks, "
                f"batch_size {batch_size}); use more data or a smaller batch_size"
            )
        self.windows_per_rank = min(share, self._n_batches * batch_size)
        # Windows of the split no rank yields in an epoch (rank balance and drop_last).
        self.dropped_windows = self.num_windows - world_size * self.windows_per_rank

        # [epoch, batches to skip, send recipes]: written by the main process at the
        # start of an iteration, read by workers when they start theirs (persistent too).
        self._shared = torch.zeros(3, dtype=torch.int64).share_memory_()
        self._epoch = 0
        self._pending_skip = 0
        self._position = 0
        self._num_workers = 1
        self._resume_workers: int | None = None

    # ------------------------------------------------------------------ public API

    def __len__(self) -> int:
        """Batches per epoch on this rank (the same on every rank)."""
        return self._n_batches

    @property
    def epoch(self) -> int:
        return self._epoch

    def label_counts(self) -> np.ndarray:
        """Windows of this split per class (whole split, before rank balancing)."""
        return self.index.label_counts(self.split)

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch (the training order depends on it); call before each epoch.

        Setting the epoch a state was loaded for keeps that resume point.
        """
        if epoch != self._epoch:
            self._pending_skip = 0
            self._resume_workers = None
        self._epoch = int(epoch)
        self._position = self._pending_skip
        self._publish(self._epoch, self._pending_skip)

    def state_dict(self) -> dict[str, Any]:
        """Position in the epoch: {"epoch", "batches" consumed on this rank} plus its layout.

        Counted where batches are handed out: by the dataset when iterated in this
        process, by `StreamingLoader` when DataLoader workers produce them.
        """
        return {
            "epoch": self._epoch,
            "batches": self._position,
            "split": self.split,
            "world_size": self.world_size,
            "num_workers": self._num_workers,
            "batches_per_epoch": self._n_batches,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Resume: the next iteration of state["epoch"] yields the batches not yet consumed."""
        try:
            epoch, batches = int(state["epoch"]), int(state["batches"])
        except (KeyError, TypeError, ValueError):
            raise ValueError(f"not a dataset state: {state!r}") from None
        if state.get("split", self.split) != self.split:
            raise ValueError(f"state is for split {state['split']!r}, not {self.split!r}")
        if (
            state.get("world_size", self.world_size) != self.world_size
            or state.get("batches_per_epoch", self._n_batches) != self._n_batches
        ):
            warnings.warn(
                f"data position saved with world size {state.get('world_size')} and "
                f"{state.get('batches_per_epoch')} batches per epoch, now {self.world_size} and "
                f"{self._n_batches}: the rest of epoch {epoch} will not match the interrupted one",
                stacklevel=2,
            )
        self._epoch = epoch
        self._pending_skip = self._position = min(max(batches, 0), self._n_batches)
        self._resume_workers = state.get("num_workers")
        self._publish(self._epoch, self._pending_skip)

    def __iter__(self) -> Iterator[Batch]:
        info = get_worker_info()
        if info is None:
            epoch, skip = self._begin_iteration(1)
            yield from self._batches(epoch, skip, in_main=True)
        else:
            epoch, skip, recipes = (int(v) for v in self._shared.tolist())
            if recipes:
                yield from self._recipes(epoch, skip, info.num_workers, info.id)
            else:
                yield from self._batches(epoch, skip, info.num_workers, info.id, in_main=False)

    # ------------------------------------------------------------------ internals

    def _publish(self, epoch: int, skip: int, recipes: bool = False) -> None:
        self._shared[0] = epoch
        self._shared[1] = skip
        self._shared[2] = int(recipes)

    def _begin_iteration(self, num_workers: int, *, recipes: bool = False) -> tuple[int, int]:
        """Fix (epoch, batches to skip) for the iteration starting now, in the main process."""
        num_workers = max(1, num_workers)
        if self._resume_workers is not None and self._resume_workers != num_workers:
            warnings.warn(
                f"resuming {self.split} with {num_workers} loader workers instead of "
                f"{self._resume_workers}: the right number of batches follows, but not exactly "
                "the windows of the interrupted epoch",
                stacklevel=3,
            )
        skip, self._pending_skip, self._resume_workers = self._pending_skip, 0, None
        self._position = skip
        self._num_workers = num_workers
        self._publish(self._epoch, skip, recipes)
        return self._epoch, skip

    def _worker_segments(
        self, epoch: int, num_workers: int, worker: int
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
        """Units, window ranges inside them, and window count of one worker's run."""
        order = sharding.unit_order(
            len(self._units), shuffle=self.shuffle, seed=self.seed, epoch=epoch
        )
        rank_start, _ = sharding.rank_range(self.num_windows, self.rank, self.world_size)
        b0, b1 = sharding.worker_batch_range(self._n_batches, num_workers, worker)
        lo = rank_start + b0 * self.batch_size
        hi = rank_start + min(b1 * self.batch_size, self.windows_per_rank)
        pos, seg_lo, seg_hi = sharding.stream_segments(self._counts[order], lo, max(lo, hi))
        return self._units[order[pos]], seg_lo, seg_hi, max(0, hi - lo)

    def _plans(
        self, epoch: int, skip: int, num_workers: int, worker: int, cache: FileCache
    ) -> tuple[int, Iterator[sharding.BatchPlan], Callable[[int], _Segment]]:
        """This worker's logical role, its remaining batch plans, and its unit loader."""
        logical = sharding.logical_worker(worker, num_workers, skip)
        units, seg_lo, seg_hi, n_windows = self._worker_segments(epoch, num_workers, logical)
        rng = (
            np.random.default_rng([self.seed, epoch, self.rank, logical, self.split_id])
            if self.shuffle
            else None
        )
        plans = sharding.plan_batches(
            seg_hi - seg_lo,
            sharding.batch_sizes(n_windows, self.batch_size),
            units_in_flight=self.units_in_flight,
            rng=rng,
        )
        # Fast-forward: batches consumed before a resume are planned, never read.
        to_skip = int(sharding.consumed_per_worker(skip, num_workers)[logical])

        def load(seg: int) -> _Segment:
            return self._load(int(units[seg]), int(seg_lo[seg]), int(seg_hi[seg]), cache)

        return logical, itertools.islice(plans, to_skip, None), load

    def _batches(
        self, epoch: int, skip: int, num_workers: int = 1, worker: int = 0, *, in_main: bool
    ) -> Iterator[Batch]:
        """Whole batches: in this process (counted as handed out), or in a plain
        DataLoader's worker (which then pins them itself)."""
        pin = in_main and self.pin_memory and torch.cuda.is_available()
        cache = FileCache()
        try:
            _, plans, load = self._plans(epoch, skip, num_workers, worker, cache)
            loaded: dict[int, _Segment] = {}
            for plan in plans:
                batch = self._gather(plan.groups, plan.released, loaded, pin, load)
                if in_main:
                    self._position += 1
                yield batch
        finally:
            cache.close()

    def _recipes(
        self, epoch: int, skip: int, num_workers: int, worker: int
    ) -> Iterator[list[_Recipe]]:
        """In a worker of a `StreamingLoader`: read and normalise units, send bundles of
        recipes (in this worker's order)."""
        cache = FileCache()
        try:
            logical, plans, load = self._plans(epoch, skip, num_workers, worker, cache)
            sent: set[int] = set()
            bundle: list[_Recipe] = []
            for plan in plans:
                new = {seg: load(seg) for seg, _ in plan.groups if seg not in sent}
                sent.update(new)
                sent.difference_update(plan.released)
                bundle.append(_Recipe(logical, new, plan.groups, plan.released))
                if len(bundle) == RECIPES_PER_ITEM:
                    yield bundle
                    bundle = []
            if bundle:
                yield bundle
        finally:
            cache.close()

    def _load(self, unit: int, lo: int, hi: int, cache: FileCache) -> _Segment:
        data = read_unit(self.index, unit, self.split, cache)
        self.normalizer.apply_(data.features)  # once per unit, not per window
        meta = np.stack([data.starts[lo:hi], data.labels[lo:hi], data.ids[lo:hi]])
        return _Segment(torch.from_numpy(data.features), meta)

    def _gather(
        self,
        groups: tuple[tuple[int, np.ndarray], ...],
        released: tuple[int, ...],
        segments: dict[int, _Segment],
        pin: bool,
        load: Callable[[int], _Segment] | None = None,
    ) -> Batch:
        """Copy a batch's windows out of its segments into fresh contiguous tensors.

        A segment missing from `segments` is loaded with `load`; a released one is
        dropped right after its last windows are copied, before the next is loaded.
        """
        size = sum(len(ords) for _, ords in groups)
        seq_len, n_feat = self.index.seq_len, self.index.num_features
        x = _empty((size, seq_len, n_feat), torch.float32, pin)
        y = _empty((size,), torch.int64, pin)
        ids = _empty((size,), torch.int64, pin) if self.with_ids else None
        y_np, ids_np = y.numpy(), None if ids is None else ids.numpy()
        at = 0
        for seg, ords in groups:
            s = segments.get(seg)
            if s is None:
                if load is None:
                    raise RuntimeError(f"loader worker never sent segment {seg}")
                s = segments[seg] = load(seg)
            k = len(ords)
            # One gather per unit, straight into the batch tensor.
            starts = torch.from_numpy(s.starts[ords])
            torch.index_select(s.windows(seq_len), 0, starts, out=x[at : at + k])
            y_np[at : at + k] = s.labels[ords]
            if ids_np is not None:
                ids_np[at : at + k] = s.ids[ords]
            at += k
            if seg in released:
                del segments[seg]
        return (x, y) if ids is None else (x, y, ids)


def _empty(shape: tuple[int, ...], dtype: torch.dtype, pin: bool) -> torch.Tensor:
    """A new batch tensor: pinned for CUDA, else from numpy's plain malloc.

    torch's CPU allocator asks for 64-byte aligned blocks (posix_memalign); glibc carves
    those out of its heap and leaves fragments that, mixed with the loader's small
    allocations, grow the heap epoch after epoch (about 100 MB over a 5M-bar epoch
    here). Same-sized plain malloc blocks are reused exactly and memory stays flat.
    """
    if pin:
        return torch.empty(shape, dtype=dtype, pin_memory=True)
    np_dtype = {torch.float32: np.float32, torch.int64: np.int64}[dtype]
    return torch.from_numpy(np.empty(shape, dtype=np_dtype))


def _empty_split_message(index: LakeIndex, split: str) -> str:
    b = index.bounds
    since = "" if b.train_start_ms is None else f"from {iso(b.train_start_ms)} "
    ranges = {
        "train": f"{since}before {iso(b.val_start_ms)}",
        "val": f"{iso(b.val_start_ms + b.embargo_ms)} to {iso(b.test_start_ms)}",
        "test": f"from {iso(b.test_start_ms + b.embargo_ms)}",
    }
    return (
        f"{index.data_dir}: the {split} split has no windows ({ranges[split]}; data spans "
        f"{iso(index.t_min_ms)} to {iso(index.t_max_ms)}, seq_len {index.seq_len}); adjust "
        "data.val_fraction/test_fraction or data.val_start/test_start, lower data.seq_len, "
        "prepare more data, or, for data with missing bars, raise data.max_gap_bars "
        f"(a window never spans a step over {index.max_gap_bars:g} bar intervals)"
    )


class StreamingLoader(DataLoader):
    """A `DataLoader` (batch_size=None) of whole batches that keeps the epoch position.

    With workers, it turns the workers' recipes into batches (see `_Recipe`) and counts
    the batches handed to the training loop, since the dataset copies in the workers
    cannot; `state_dict()` / `load_state_dict()` / `set_epoch()` delegate to the dataset.
    """

    dataset: StreamingWindowDataset

    def __init__(self, dataset: StreamingWindowDataset, *, pin: bool = False, **kwargs: Any):
        super().__init__(dataset, batch_size=None, **kwargs)
        self.pin = pin

    def __iter__(self) -> Iterator[Batch]:  # type: ignore[override]
        ds = self.dataset
        if self.num_workers == 0:
            # What DataLoader(batch_size=None, num_workers=0) does, minus its per-batch
            # bookkeeping (about 0.1 ms); the dataset counts its own batches.
            yield from ds
            return
        ds._begin_iteration(self.num_workers, recipes=True)
        segments: dict[int, dict[int, _Segment]] = defaultdict(dict)  # per worker
        waiting: dict[int, deque[_Recipe]] = defaultdict(deque)  # per worker, in its order
        for bundle in super().__iter__():
            waiting[bundle[0].worker].extend(bundle)
            # Batch k of the epoch is worker k % num_workers's (see `sharding`): hand out
            # batches in that order, whatever order the bundles arrived in.
            while queue := waiting[ds._position % self.num_workers]:
                recipe = queue.popleft()
                held = segments[recipe.worker]
                held.update(recipe.new)
                batch = ds._gather(recipe.groups, recipe.released, held, self.pin)
                ds._position += 1
                yield batch
        if any(waiting.values()):
            raise RuntimeError("loader workers sent batches out of the round-robin order")

    def set_epoch(self, epoch: int) -> None:
        self.dataset.set_epoch(epoch)

    def state_dict(self) -> dict[str, Any]:
        return self.dataset.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.dataset.load_state_dict(state)


def make_loader(
    dataset: StreamingWindowDataset,
    *,
    num_workers: int = 0,
    prefetch_factor: int = 2,
    persistent_workers: bool = False,
    pin_memory: bool = False,
) -> StreamingLoader:
    """A loader of whole batches (x, y[, ids]); with `pin_memory` on a CUDA machine the
    batches are allocated in pinned memory directly (no extra copy)."""
    if not isinstance(dataset, StreamingWindowDataset):
        raise TypeError(f"make_loader needs a StreamingWindowDataset, got {type(dataset).__name__}")
    dataset.pin_memory = dataset.pin_memory or pin_memory
    extra: dict[str, Any] = {}
    if num_workers > 0:
        extra = {"prefetch_factor": prefetch_factor, "persistent_workers": persistent_workers}
    pin = dataset.pin_memory and torch.cuda.is_available()
    return StreamingLoader(dataset, pin=pin, num_workers=num_workers, **extra)


@dataclass
class DataBundle:
    """What `build_data` makes: lake index, split bounds, statistics, datasets, loaders."""

    index: LakeIndex
    bounds: SplitBounds
    normalizer: Normalizer
    train: StreamingWindowDataset | None = None
    val: StreamingWindowDataset | None = None
    test: StreamingWindowDataset | None = None
    train_dl: StreamingLoader | None = None
    val_dl: StreamingLoader | None = None
    test_dl: StreamingLoader | None = None
    summary: dict[str, Any] = field(default_factory=dict)


def build_data(
    cfg: Any,
    *,
    rank: int = 0,
    world_size: int = 1,
    pin_memory: bool = False,
    splits: tuple[str, ...] = SPLITS,
    normalizer: Normalizer | None = None,
    gather: Gather | None = None,
) -> DataBundle:
    """Scan the lake in cfg.paths.data_dir and build a dataset and loader per requested split.

    Statistics are fitted on the training rows unless `normalizer` is given (evaluating
    a checkpoint); with several ranks each reads its share of those rows and `gather`
    (an all-gather of objects across ranks) combines them. Raises DataError when a
    requested split has no windows.
    """
    for s in splits:
        split_index(s)
    dc = cfg.data
    index = scan_lake_for(dc, cfg.paths.data_dir)
    if normalizer is None:
        normalizer = fit_normalizer(index, rank=rank, world_size=world_size, gather=gather)
    bundle = DataBundle(index=index, bounds=index.bounds, normalizer=normalizer)
    for split in splits:
        ds = StreamingWindowDataset(
            index,
            split,
            batch_size=cfg.train.batch_size,
            normalizer=normalizer,
            shuffle=split == "train",
            seed=cfg.train.seed,
            rank=rank,
            world_size=world_size,
            units_in_flight=dc.units_in_flight,
            pin_memory=pin_memory,
        )
        dl = make_loader(
            ds,
            num_workers=dc.num_workers,
            prefetch_factor=dc.prefetch_factor,
            persistent_workers=dc.num_workers > 0,
            pin_memory=pin_memory,
        )
        setattr(bundle, split, ds)
        setattr(bundle, f"{split}_dl", dl)
        if ds.dropped_windows:
            log.info(
                "%s: %d of %d windows left out of each epoch so all %d ranks get %d batches",
                split,
                ds.dropped_windows,
                ds.num_windows,
                world_size,
                len(ds),
            )
    bundle.summary = _summary(bundle, splits)
    return bundle


def _summary(bundle: DataBundle, splits: tuple[str, ...]) -> dict[str, Any]:
    """The lake summary plus what the loaders do with it (keys the run header reads)."""
    index = bundle.index
    summary = index.summary()
    datasets = {s: getattr(bundle, s) for s in splits}
    summary["label_counts"] = {s: index.label_counts(s).tolist() for s in SPLITS}
    summary["purged"] = index.purged_windows
    summary["batches_per_epoch"] = {s: len(ds) for s, ds in datasets.items()}
    summary["dropped_for_rank_balance"] = {s: ds.dropped_windows for s, ds in datasets.items()}
    summary["dropped"] = sum(ds.dropped_windows for ds in datasets.values())
    summary["normalizer_rows"] = bundle.normalizer.n_rows
    return summary
