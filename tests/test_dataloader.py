"""The streaming dataset against a naive in-memory reference of the window and split rules.

The lake (from `tests/test_lake.py`) has two symbols, row groups shorter than the
halo, a file boundary that windows cross, gaps, and purged samples; batches of 4 make
many batches per epoch, and two units in flight make the shuffle buffer matter.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from torch.utils.data import DataLoader

from src.config import Config, DataConfig, PathsConfig, TrainConfig
from src.core.errors import DataError
from src.data import dataloader as D
from src.data import normalize as N
from src.data.dataloader import (
    StreamingWindowDataset,
    build_data,
    make_loader,
)
from src.data.lake import ID_FILE_STRIDE, LakeIndex
from src.data.normalize import Normalizer, fit_normalizer
from src.data.split import SPLITS, SplitBounds
from tests.test_lake import (
    FEATURES,
    SEQ_LEN,
    Reference,
    reference_windows,
    scan,
    standard_bounds,
    standard_lake,
)

BATCH = 4


@pytest.fixture(scope="module")
def lake(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return standard_lake(tmp_path_factory.mktemp("lake"))


@pytest.fixture(scope="module")
def index(lake: Path) -> LakeIndex:
    return scan(lake)


@pytest.fixture(scope="module")
def ref(lake: Path) -> Reference:
    return reference_windows(lake, standard_bounds(lake))


@pytest.fixture(scope="module")
def norm(index: LakeIndex) -> Normalizer:
    return fit_normalizer(index)


def dataset(
    index: LakeIndex, norm: Normalizer, split: str = "train", **kw
) -> StreamingWindowDataset:
    kw.setdefault("batch_size", BATCH)
    kw.setdefault("shuffle", split == "train")
    kw.setdefault("units_in_flight", 2)
    kw.setdefault("with_ids", True)
    return StreamingWindowDataset(index, split, normalizer=norm, **kw)


def epoch_ids(
    loader, ref: Reference | None = None, norm: Normalizer | None = None
) -> list[list[int]]:
    """Ids of every batch of one pass, checking shapes and (with `ref`) contents."""
    out = []
    for x, y, ids in loader:
        assert (
            x.dtype == torch.float32
            and x.is_contiguous()
            and x.shape[1:] == (SEQ_LEN, len(FEATURES))
        )
        assert y.dtype == torch.int64 and ids.dtype == torch.int64
        assert len(x) == len(y) == len(ids) <= BATCH
        if ref is not None:
            expected = np.stack([norm.apply(ref.features[int(i)]) for i in ids])
            np.testing.assert_allclose(x.numpy(), expected, rtol=0, atol=1e-6)
            assert y.tolist() == [ref.label[int(i)] for i in ids]
        out.append(ids.tolist())
    return out


@pytest.mark.parametrize("workers", [0, 1, 2])
@pytest.mark.parametrize("world", [1, 2])
def test_every_window_once_per_epoch_and_equal_batches_per_rank(
    index: LakeIndex, norm: Normalizer, ref: Reference, world: int, workers: int
) -> None:
    for split in ("train", "val"):
        per_rank = []
        for rank in range(world):
            ds = dataset(index, norm, split, rank=rank, world_size=world)
            ds.set_epoch(3)
            batches = epoch_ids(make_loader(ds, num_workers=workers), ref, norm)
            assert len(batches) == len(ds)
            per_rank.append([i for b in batches for i in b])
        assert len({len(ids) for ids in per_rank}) == 1  # equal work on every rank
        seen = [i for ids in per_rank for i in ids]
        assert len(seen) == len(set(seen))  # exactly once
        expected = set(ref.ids[split])
        assert set(seen) <= expected
        assert ds.dropped_windows == len(expected) % world == len(expected) - len(seen)
        assert ds.num_windows == len(expected)


def test_full_coverage_includes_windows_across_row_groups_and_files(
    index: LakeIndex, norm: Normalizer, ref: Reference
) -> None:
    ids = {i for s in SPLITS for b in epoch_ids(make_loader(dataset(index, norm, s))) for i in b}
    assert ids == {i for s in SPLITS for i in ref.ids[s]}
    rows = {(i // ID_FILE_STRIDE, i % ID_FILE_STRIDE) for i in ids}
    # Row 0 of AAA_2024-02 (file 1) ends a window made of four bars of AAA_2024-01.
    assert (1, 0) in rows
    # AAA_2024-01 has row groups 0-6 | 7-9 | 10-21: the windows ending at rows 10 and
    # 11 reach back through the whole 3-row group into the first one.
    assert {(0, 8), (0, 9), (0, 10), (0, 11)} <= rows
    # BBB_2024-02 (file 3) follows a ten-bar gap: its first window ends at its row 4.
    assert (3, 3) not in rows and (3, 4) in rows


def test_validation_order_is_fixed_and_training_order_changes_per_epoch(
    index: LakeIndex, norm: Normalizer
) -> None:
    val = dataset(index, norm, "val")
    first = epoch_ids(make_loader(val))
    val.set_epoch(5)
    assert (
        epoch_ids(make_loader(val)) == first == epoch_ids(make_loader(dataset(index, norm, "val")))
    )
    train = dataset(index, norm, "train")
    orders = []
    for epoch in (0, 1, 0):
        train.set_epoch(epoch)
        orders.append([i for b in epoch_ids(make_loader(train)) for i in b])
    assert orders[0] != orders[1] and sorted(orders[0]) == sorted(orders[1])
    assert orders[0] == orders[2]


def test_epoch_reaches_persistent_workers(index: LakeIndex, norm: Normalizer) -> None:
    def fresh(epoch: int) -> list[list[int]]:
        ds = dataset(index, norm)
        ds.set_epoch(epoch)
        return epoch_ids(make_loader(ds, num_workers=2))

    ds = dataset(index, norm)
    loader = make_loader(ds, num_workers=2, persistent_workers=True)
    seen = []
    for epoch in (0, 1, 2):
        ds.set_epoch(epoch)
        seen.append(epoch_ids(loader))
    assert seen == [fresh(0), fresh(1), fresh(2)]
    assert seen[0] != seen[1]


def test_no_label_horizon_crosses_a_split_boundary(
    index: LakeIndex, norm: Normalizer, ref: Reference
) -> None:
    b = index.bounds
    for split in SPLITS:
        ids = [i for batch in epoch_ids(make_loader(dataset(index, norm, split))) for i in batch]
        ts = np.array([ref.timestamp[i] for i in ids])
        he = np.array([ref.horizon[i] for i in ids])
        if split == "train":
            assert (ts < b.val_start_ms).all() and (he < b.val_start_ms).all()
        elif split == "val":
            assert (ts >= b.val_start_ms).all() and (ts < b.test_start_ms).all()
            assert (he < b.test_start_ms).all()
        else:
            assert (ts >= b.test_start_ms).all()
    assert index.purged_windows > 0


def _rewrite_rows(src: Path, dst: Path, change) -> None:
    dst.mkdir()
    for path in sorted(src.glob("*.parquet")):
        pf = pq.ParquetFile(path)
        table = pf.read()
        ts = table.column("timestamp").cast(pa.int64()).to_numpy()
        for name in FEATURES:
            values = change(ts, table.column(name).to_numpy().copy())
            table = table.set_column(table.schema.get_field_index(name), name, pa.array(values))
        sizes = [pf.metadata.row_group(i).num_rows for i in range(pf.num_row_groups)]
        with pq.ParquetWriter(dst / path.name, pf.schema_arrow) as writer:
            start = 0
            for n in sizes:
                writer.write_table(table.slice(start, n), row_group_size=n)
                start += n


def test_normaliser_uses_training_rows_only(tmp_path: Path, lake: Path, norm: Normalizer) -> None:
    bounds = standard_bounds(lake)
    v = bounds.val_start_ms
    _rewrite_rows(lake, tmp_path / "later", lambda ts, x: np.where(ts >= v, x * 100 + 5, x))
    assert fit_normalizer(scan(tmp_path / "later", bounds)).to_dict() == norm.to_dict()
    _rewrite_rows(lake, tmp_path / "earlier", lambda ts, x: np.where(ts < v, x * 2, x))
    assert fit_normalizer(scan(tmp_path / "earlier", bounds)).to_dict() != norm.to_dict()
    # Exact float64 statistics of the rows before val_start; constant features divide by 1.
    rows = []
    for path in sorted(lake.glob("*.parquet")):
        t = pq.read_table(path)
        keep = t.column("timestamp").cast(pa.int64()).to_numpy() < v
        rows.append(np.stack([t.column(f).to_numpy() for f in FEATURES], axis=1)[keep])
    rows = np.concatenate(rows).astype(np.float64)
    np.testing.assert_allclose(norm.mean, rows.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(norm.std[:2], rows.std(axis=0)[:2], rtol=1e-12)
    assert norm.std[2] == 1.0 and norm.n_rows == len(rows)
    assert Normalizer.from_dict(norm.to_dict()).to_dict() == norm.to_dict()


def _fit_on_ranks(index: LakeIndex, world_size: int) -> list[Normalizer | Exception]:
    """`fit_normalizer` on `world_size` threads standing in for ranks, with an all-gather
    that blocks like the real one (a rank that never arrives breaks it after 10 s)."""
    barrier = threading.Barrier(world_size, timeout=10)
    slots: list = [None] * world_size

    def rank_body(rank: int) -> Normalizer | Exception:
        def gather(obj):
            slots[rank] = obj
            barrier.wait()
            out = list(slots)
            barrier.wait()  # no rank overwrites its slot before every rank has read
            return out

        try:
            return fit_normalizer(index, rank=rank, world_size=world_size, gather=gather)
        except Exception as err:  # returned, so the test sees every rank's outcome
            return err

    with ThreadPoolExecutor(world_size) as pool:
        return list(pool.map(rank_body, range(world_size)))


@pytest.mark.parametrize("world_size", [2, 3])
def test_ranks_share_the_normaliser_fit_and_get_identical_statistics(
    index: LakeIndex, norm: Normalizer, world_size: int, monkeypatch
) -> None:
    reads: list[int] = []
    real = N.read_columns

    def counted(*args, **kw):
        reads.append(1)
        return real(*args, **kw)

    monkeypatch.setattr(N, "read_columns", counted)
    fit_normalizer(index)
    alone = len(reads)
    reads.clear()
    fitted = _fit_on_ranks(index, world_size)
    # Bit-identical to one process on every rank, and every unit read once in all.
    assert [f.to_dict() for f in fitted] == [norm.to_dict()] * world_size
    assert len(reads) == alone > world_size


def test_a_bad_value_in_one_ranks_share_stops_every_rank(tmp_path: Path, lake: Path) -> None:
    # One NaN, in the lake's first row: only the rank that reads that unit finds it.
    first = min(
        pq.read_table(path).column("timestamp").cast(pa.int64()).to_numpy().min()
        for path in lake.glob("*.parquet")
    )
    _rewrite_rows(lake, tmp_path / "nan", lambda ts, x: np.where(ts == first, np.nan, x))
    bad = scan(tmp_path / "nan", standard_bounds(lake))
    with pytest.raises(DataError, match="non-finite"):
        fit_normalizer(bad)  # the row is in the training range
    outcomes = _fit_on_ranks(bad, 2)
    assert all(isinstance(o, DataError) for o in outcomes), outcomes
    assert str(outcomes[0]) == str(outcomes[1]) and ".parquet" in str(outcomes[0])


@pytest.mark.parametrize(
    ("workers", "persistent", "bundle"),
    [(0, False, None), (2, False, 16), (2, True, 16), (2, False, 2), (2, True, 3)],
)
def test_resume_yields_exactly_the_remaining_batches(
    index: LakeIndex, norm: Normalizer, workers: int, persistent: bool, bundle, monkeypatch
) -> None:
    if bundle:  # workers fork after this, so they see it
        monkeypatch.setattr(D, "RECIPES_PER_ITEM", bundle)
    real_read = D.read_unit
    full_ds = dataset(index, norm, world_size=2, rank=1)
    full_ds.set_epoch(1)
    full = epoch_ids(make_loader(full_ds, num_workers=workers))
    assert full_ds.state_dict()["batches"] == len(full_ds)
    for k in (0, 3, len(full) - 1):
        first = dataset(index, norm, world_size=2, rank=1)
        loader = make_loader(first, num_workers=workers, persistent_workers=persistent)
        first.set_epoch(0)
        epoch_ids(loader)  # a whole epoch before, as in training
        first.set_epoch(1)
        consumed = []
        for _, _, ids in loader if k else ():
            consumed.append(ids.tolist())
            if len(consumed) == k:
                break
        state = loader.state_dict()
        assert (state["epoch"], state["batches"]) == (1, k)
        assert consumed == full[:k]

        loads: list[int] = []
        monkeypatch.setattr(D, "read_unit", _counting(real_read, loads))
        resumed = dataset(index, norm, world_size=2, rank=1)
        loader = make_loader(resumed, num_workers=workers, persistent_workers=persistent)
        resumed.load_state_dict(state)
        resumed.set_epoch(1)  # what a training loop does at the top of the epoch
        assert epoch_ids(loader) == full[k:]
        assert resumed.state_dict()["batches"] == len(full)
        monkeypatch.setattr(D, "read_unit", real_read)
        if workers == 0:
            # Consumed units are skipped by planning, not read.
            needed = _units_of(index, [i for b in full[k:] for i in b])
            assert set(loads) == needed
        resumed.set_epoch(2)
        assert resumed.state_dict()["batches"] == 0


def _counting(read, loads: list[int]):
    def counted(index, unit, *args):
        loads.append(unit)
        return read(index, unit, *args)

    return counted


def _units_of(index: LakeIndex, ids: list[int]) -> set[int]:
    u = index.units
    out = set()
    for i in ids:
        f, row = divmod(i, ID_FILE_STRIDE)
        out.add(
            int(
                np.flatnonzero(
                    (u.file == f) & (u.row_start <= row) & (row < u.row_start + u.n_rows)
                )[0]
            )
        )
    return out


@pytest.mark.parametrize("bundle", [1, 2, 4, 16])
def test_a_plain_dataloader_gets_whole_batches_from_its_workers(
    index: LakeIndex, norm: Normalizer, ref: Reference, bundle: int, monkeypatch
) -> None:
    """...in the order `make_loader` gives them, whatever its workers' bundles of recipes."""
    monkeypatch.setattr(D, "RECIPES_PER_ITEM", bundle)
    ds = dataset(index, norm, "train")
    ds.set_epoch(2)
    plain = epoch_ids(DataLoader(ds, batch_size=None, num_workers=2), ref, norm)
    assert plain == epoch_ids(make_loader(ds, num_workers=2))


def test_drop_last_and_batches_without_ids(index: LakeIndex, norm: Normalizer) -> None:
    ds = dataset(index, norm, "train", drop_last=True, with_ids=False, batch_size=5)
    batches = list(make_loader(ds))
    assert all(len(b) == 2 and len(b[0]) == 5 for b in batches) and len(batches) == len(ds)
    assert ds.dropped_windows == ds.num_windows % 5
    assert ds.label_counts().sum() == ds.num_windows


def test_empty_split_names_the_split(index: LakeIndex, norm: Normalizer, lake: Path) -> None:
    late = SplitBounds(index.t_max_ms + 1, index.t_max_ms + 1)
    with pytest.raises(DataError, match="the val split has no windows"):
        dataset(scan(lake, late), norm, "val")
    with pytest.raises(DataError, match="the train split has .* fewer than"):
        dataset(index, norm, "train", world_size=2, batch_size=1000, drop_last=True)


def _config(lake: Path, **data) -> Config:
    settings = {"seq_len": SEQ_LEN, "val_fraction": 0.25, "test_fraction": 0.25, **data}
    return Config(
        paths=PathsConfig(data_dir=lake),
        data=DataConfig(units_in_flight=2, **settings),
        train=TrainConfig(batch_size=BATCH, seed=1),
    )


def test_build_data(lake: Path, norm: Normalizer, ref: Reference) -> None:
    bundle = build_data(_config(lake), rank=0, world_size=2)
    assert bundle.bounds == standard_bounds(lake)
    assert bundle.normalizer.to_dict() == norm.to_dict()
    s = bundle.summary
    assert s["files"] == 4 and s["rows"] == 130
    assert s["windows"] == {k: len(v) for k, v in ref.ids.items()}
    assert s["purged"] == ref.purged
    assert s["dropped"] == sum(len(v) % 2 for v in ref.ids.values())
    for split in SPLITS:
        ds, dl = getattr(bundle, split), getattr(bundle, f"{split}_dl")
        assert len(dl) == len(ds) == s["batches_per_epoch"][split]
        assert sum(s["label_counts"][split]) == len(ref.ids[split])
    assert sum(len(x) for x, _ in bundle.val_dl) == len(ref.ids["val"]) // 2
    # Evaluation from a checkpoint: given statistics, one split.
    given = Normalizer.from_dict(norm.to_dict())
    test_only = build_data(_config(lake), splits=("test",), normalizer=given)
    assert test_only.train is None and test_only.normalizer is given and test_only.test_dl
    with pytest.raises(DataError, match="the test split has no windows"):
        build_data(_config(lake, test_fraction=0.0), splits=("test",), normalizer=given)
