"""Scanning and reading processed lakes written directly with pyarrow (not with `prepare`).

`write_file`, `standard_lake` and `reference_windows` are shared with
`tests/test_dataloader.py`: a small lake with two symbols, row groups of mixed sizes
(some shorter than the halo), a file boundary a window must cross, in-file gaps and
a gap between files, and a naive in-memory reference of the window rules.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from src.core import constants as C
from src.core.errors import DataError
from src.data.lake import ID_FILE_STRIDE, FileCache, read_unit, scan_lake
from src.data.split import SPLITS, SplitBounds, assign_split, split_bounds

BAR = 60_000
T0 = 1_704_067_200_000  # 2024-01-01T00:00Z
FEATURES = ["f0", "f1", "f2"]
SEQ_LEN = 5
MAX_GAP = 1.5


def bar_times(start_bar: int, n: int, gaps: dict[int, int] | None = None) -> np.ndarray:
    """n bar timestamps from bar `start_bar`; gaps[i] = extra bars missing before row i."""
    steps = np.ones(n, dtype=np.int64)
    steps[0] = 0
    for row, extra in (gaps or {}).items():
        steps[row] += extra
    return T0 + (start_bar + np.cumsum(steps)) * BAR


def file_table(
    symbol: str,
    ts: np.ndarray,
    *,
    seed: int,
    base: float = 0.0,
    features: list[str] = FEATURES,
) -> pa.Table:
    """A contract-shaped table: f0 = base + row (identifies the row), f1 noise, f2 constant."""
    rng = np.random.default_rng(seed)
    n = len(ts)
    cols: dict[str, pa.Array] = {
        C.TIMESTAMP_COL: pa.array(ts, pa.timestamp("ms", tz="UTC")),
        C.SYMBOL_COL: pa.array([symbol] * n, pa.string()),
    }
    values = [base + np.arange(n), rng.normal(size=n) * 3 + 1, np.full(n, 7.0)]
    for i, name in enumerate(features):
        cols[name] = pa.array(values[i % 3].astype(np.float32), pa.float32())
    cols[C.LABEL_COL] = pa.array(rng.integers(0, 4, n).astype(np.int8), pa.int8())
    horizon = ts + rng.integers(1, 9, n) * BAR
    cols[C.HORIZON_END_COL] = pa.array(horizon, pa.timestamp("ms", tz="UTC"))
    return pa.table(cols)


def write_file(
    path: Path,
    table: pa.Table,
    row_groups: list[int],
    *,
    features: list[str] = FEATURES,
    bar_ms: int = BAR,
    meta: bool = True,
) -> Path:
    """Write `table` with exactly the given row-group sizes and the `saimp` metadata."""
    assert sum(row_groups) == table.num_rows
    if meta:
        info = {"version": 1, "features": features, "bar_ms": bar_ms, "label": {}}
        table = table.replace_schema_metadata({C.PARQUET_META_KEY: json.dumps(info).encode()})
    with pq.ParquetWriter(path, table.schema) as writer:
        start = 0
        for n in row_groups:
            writer.write_table(table.slice(start, n), row_group_size=n)
            start += n
    return path


@dataclass
class LakeFileSpec:
    name: str
    symbol: str
    ts: np.ndarray
    row_groups: list[int]
    seed: int


def standard_specs() -> list[LakeFileSpec]:
    """Two symbols; AAA's two files are contiguous (windows cross the file boundary)."""
    return [
        # Row groups of 7, 3 (< seq_len - 1: its halo spans two units) ...; gap after row 17.
        LakeFileSpec("AAA_2024-01.parquet", "AAA", bar_times(0, 40, {17: 3}), [7, 3, 12, 18], 1),
        # Starts one bar after AAA_2024-01 ends; a 1.5-bar step (allowed) at row 12.
        LakeFileSpec(
            "AAA_2024-02.parquet", "AAA", bar_times(43, 30) + _half_bar_at(30, 12), [10, 10, 10], 2
        ),
        LakeFileSpec("BBB_2024-01.parquet", "BBB", bar_times(2, 35, {20: 1}), [16, 19], 3),
        # Ten bars after BBB_2024-01: no halo across this boundary.
        LakeFileSpec("BBB_2024-02.parquet", "BBB", bar_times(47, 25), [25], 4),
    ]


def _half_bar_at(n: int, row: int) -> np.ndarray:
    shift = np.zeros(n, dtype=np.int64)
    shift[row:] = BAR // 2
    return shift


def standard_lake(root: Path, specs: list[LakeFileSpec] | None = None) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for i, spec in enumerate(specs or standard_specs()):
        table = file_table(spec.symbol, spec.ts, seed=spec.seed, base=1000.0 * (i + 1))
        write_file(root / spec.name, table, spec.row_groups)
    return root


def standard_bounds(root: Path) -> SplitBounds:
    tables = [pq.read_table(p, columns=["timestamp"]) for p in sorted(root.glob("*.parquet"))]
    ts = np.concatenate([_ms(t, "timestamp") for t in tables])
    return split_bounds(int(ts.min()), int(ts.max()), val_fraction=0.25, test_fraction=0.25)


@dataclass
class Reference:
    """Every window of every split, computed naively from the whole lake in memory."""

    ids: dict[str, list[int]]
    features: dict[int, np.ndarray]
    """id -> (seq_len, F) raw features of the window."""
    label: dict[int, int]
    timestamp: dict[int, int]
    horizon: dict[int, int]
    purged: int


def _ms(table: pa.Table, name: str) -> np.ndarray:
    col = table.column(name)
    return col.cast(pa.timestamp("ms", tz="UTC")).cast(pa.int64()).to_numpy()


def reference_windows(
    root: Path, bounds: SplitBounds, *, seq_len: int = SEQ_LEN, max_gap: float = MAX_GAP
) -> Reference:
    """Apply the window and split rules bar by bar to the whole lake held in memory."""
    paths = sorted(root.glob("*.parquet"))  # = (symbol, time) order for these names
    streams: dict[str, list[tuple[int, int, int, int, int, np.ndarray]]] = {}
    for fi, path in enumerate(paths):
        t = pq.read_table(path)
        ts, he = _ms(t, "timestamp"), _ms(t, "horizon_end")
        feats = np.stack([t.column(f).to_numpy() for f in FEATURES], axis=1)
        labels = t.column("label").to_numpy()
        for r, symbol in enumerate(t.column("symbol").to_pylist()):
            streams.setdefault(symbol, []).append(
                (fi, r, int(ts[r]), int(he[r]), int(labels[r]), feats[r])
            )
    ref = Reference({s: [] for s in SPLITS}, {}, {}, {}, {}, 0)
    for rows in streams.values():
        rows.sort(key=lambda row: row[2])
        for i in range(seq_len - 1, len(rows)):
            window = rows[i - seq_len + 1 : i + 1]
            if any(b[2] - a[2] > max_gap * BAR for a, b in zip(window, window[1:], strict=False)):
                continue
            fi, r, ts_i, he_i, label, _ = rows[i]
            code = int(assign_split(np.array([ts_i]), np.array([he_i]), bounds)[0])
            if code < 0:
                ref.purged += 1
                continue
            wid = fi * ID_FILE_STRIDE + r
            ref.ids[SPLITS[code]].append(wid)
            ref.features[wid] = np.stack([row[5] for row in window])
            ref.label[wid] = label
            ref.timestamp[wid] = ts_i
            ref.horizon[wid] = he_i
    return ref


def scan(root: Path, bounds: SplitBounds | None = None, **kw: object):
    return scan_lake(
        root,
        seq_len=kw.pop("seq_len", SEQ_LEN),
        max_gap_bars=kw.pop("max_gap_bars", MAX_GAP),
        bounds=bounds or standard_bounds(root),
    )


# ------------------------------------------------------------------------------- tests


@pytest.fixture(scope="module")
def lake(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return standard_lake(tmp_path_factory.mktemp("lake"))


def test_index_counts_match_the_naive_reference(lake: Path) -> None:
    bounds = standard_bounds(lake)
    index = scan(lake, bounds)
    ref = reference_windows(lake, bounds)
    assert index.feature_names == FEATURES and index.bar_ms == BAR
    assert [f.path.name for f in index.files] == [s.name for s in standard_specs()]
    assert len(index.units) == 10 and index.n_rows == 130
    for split in SPLITS:
        assert index.num_windows(split) > 0
        assert index.num_windows(split) == len(ref.ids[split])
        labels = np.bincount([ref.label[i] for i in ref.ids[split]], minlength=4)
        assert index.label_counts(split).tolist() == labels.tolist()
    assert index.purged_windows == ref.purged
    total = sum(len(v) for v in ref.ids.values())
    assert index.short_rows == index.n_rows - total - ref.purged


def test_halo_crosses_row_groups_and_contiguous_files_only(lake: Path) -> None:
    index = scan(lake)
    u = index.units
    names = [index.files[f].path.name for f in u.file]
    # AAA_2024-01: 7 | 3 (halo 4 from the 7-row group) | 12 (halo 4 spans 3 + 7) | 18.
    assert u.halo[:4].tolist() == [0, 4, 4, 4]
    assert u.prev[2] == 1 and u.prev[1] == 0
    # AAA_2024-02 continues AAA_2024-01 across the file boundary ...
    assert names[4] == "AAA_2024-02.parquet" and u.halo[4] == 4 and u.prev[4] == 3
    # ... BBB_2024-02 does not (ten bars apart), and a new symbol starts from nothing.
    assert names[7] == "BBB_2024-01.parquet" and u.halo[7] == 0
    assert names[9] == "BBB_2024-02.parquet" and u.halo[9] == 0


def test_read_unit_gives_the_reference_windows(lake: Path) -> None:
    bounds = standard_bounds(lake)
    index = scan(lake, bounds)
    ref = reference_windows(lake, bounds)
    cache = FileCache()
    seen: dict[str, list[int]] = {s: [] for s in SPLITS}
    for unit in range(len(index.units)):
        for split in SPLITS:
            data = read_unit(index, unit, split, cache)
            assert data.features.dtype == np.float32 and data.features.flags.c_contiguous
            for start, label, wid in zip(data.starts, data.labels, data.ids, strict=True):
                window = data.features[start : start + SEQ_LEN]
                np.testing.assert_array_equal(window, ref.features[wid])
                assert label == ref.label[wid]
                seen[split].append(int(wid))
    cache.close()
    for split in SPLITS:
        assert sorted(seen[split]) == sorted(ref.ids[split])


def test_microsecond_timestamps_no_metadata_and_no_symbol_column(tmp_path: Path) -> None:
    ts = bar_times(0, 30)
    table = file_table("X", ts, seed=0)
    table = table.set_column(0, "timestamp", table.column(0).cast(pa.timestamp("us", tz="UTC")))
    write_file(tmp_path / "X_2024-01.parquet", table, [30], meta=False)
    bounds = SplitBounds(int(ts[20]), int(ts[25]))
    index = scan(tmp_path, bounds)
    # Features and bar interval are inferred when the `saimp` metadata is missing.
    assert index.bar_ms == BAR and index.feature_names == FEATURES
    assert index.t_min_ms == int(ts[0])
    assert index.num_windows("train") == len(reference_windows(tmp_path, bounds).ids["train"])
    # Without a symbol column, the file name gives the symbol.
    (tmp_path / "b").mkdir()
    write_file(tmp_path / "b" / "ZZZ_2024-01.parquet", table.drop_columns(["symbol"]), [30])
    assert scan(tmp_path / "b", bounds).files[0].symbol == "ZZZ"


# ------------------------------------------------------------------------------- errors


def _one_file_lake(root: Path, table: pa.Table | None = None, **kw: object) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    table = table if table is not None else file_table("X", bar_times(0, 30), seed=0)
    return write_file(
        root / "X_2024-01.parquet", table, kw.pop("row_groups", [table.num_rows]), **kw
    )


def _raises(root: Path, *needles: str) -> str:
    with pytest.raises(DataError) as info:
        scan(root, SplitBounds(T0 + 20 * BAR, T0 + 25 * BAR))
    message = str(info.value)
    for needle in needles:
        assert needle in message, message
    return message


def test_missing_or_empty_data_dir(tmp_path: Path) -> None:
    _raises(tmp_path / "nope", "does not exist", "prepare")
    (tmp_path / "empty").mkdir()
    _raises(tmp_path / "empty", "no *.parquet files")


def test_corrupt_file_is_named(tmp_path: Path) -> None:
    _one_file_lake(tmp_path)
    bad = tmp_path / "Y_2024-01.parquet"
    bad.write_bytes(b"PAR1 this is not parquet at all")
    _raises(tmp_path, "Y_2024-01.parquet", "not a readable Parquet file")


def test_truncated_file_is_named(tmp_path: Path) -> None:
    path = _one_file_lake(tmp_path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    _raises(tmp_path, "X_2024-01.parquet")


def test_missing_column_is_named(tmp_path: Path) -> None:
    table = file_table("X", bar_times(0, 30), seed=0).drop_columns(["horizon_end"])
    _one_file_lake(tmp_path, table)
    _raises(tmp_path, "X_2024-01.parquet", "horizon_end", "missing column")


def test_missing_feature_column_is_named(tmp_path: Path) -> None:
    table = file_table("X", bar_times(0, 30), seed=0).drop_columns(["f1"])
    _one_file_lake(tmp_path, table)
    _raises(tmp_path, "X_2024-01.parquet", "f1")


def test_mistyped_columns_are_named(tmp_path: Path) -> None:
    table = file_table("X", bar_times(0, 30), seed=0)
    table = table.set_column(2, "f0", table.column("f0").cast(pa.float64()))
    _one_file_lake(tmp_path / "a", table)
    _raises(tmp_path / "a", "X_2024-01.parquet", "'f0'", "float32")
    table = file_table("X", bar_times(0, 30), seed=0)
    table = table.set_column(0, "timestamp", table.column(0).cast(pa.string()))
    _one_file_lake(tmp_path / "b", table)
    _raises(tmp_path / "b", "'timestamp'", "timestamp")


def test_different_feature_lists_are_named(tmp_path: Path) -> None:
    _one_file_lake(tmp_path)
    other = file_table("Y", bar_times(0, 30), seed=1, features=["f0", "g1", "f2"])
    write_file(tmp_path / "Y_2024-01.parquet", other, [30], features=["f0", "g1", "f2"])
    _raises(tmp_path, "Y_2024-01.parquet", "X_2024-01.parquet", "feature columns")


@pytest.mark.parametrize("kind", ["unsorted", "duplicate"])
def test_unsorted_or_duplicate_timestamps_name_the_row(tmp_path: Path, kind: str) -> None:
    ts = bar_times(0, 30)
    ts[17] = ts[16] if kind == "duplicate" else ts[15]
    _one_file_lake(tmp_path, file_table("X", ts, seed=0), row_groups=[10, 20])
    message = _raises(tmp_path, "X_2024-01.parquet", "row 17")
    assert ("duplicate" if kind == "duplicate" else "out-of-order") in message


def test_overlapping_files_of_a_symbol_are_named(tmp_path: Path) -> None:
    write_file(tmp_path / "X_2024-01.parquet", file_table("X", bar_times(0, 30), seed=0), [30])
    write_file(tmp_path / "X_2024-02.parquet", file_table("X", bar_times(20, 30), seed=1), [30])
    _raises(tmp_path, "X_2024-01.parquet", "X_2024-02.parquet", "overlap")


def test_bad_label_is_named(tmp_path: Path) -> None:
    table = file_table("X", bar_times(0, 30), seed=0)
    labels = table.column("label").to_numpy().copy()
    labels[9] = 7
    table = table.set_column(table.schema.get_field_index("label"), "label", pa.array(labels))
    _one_file_lake(tmp_path, table)
    _raises(tmp_path, "X_2024-01.parquet", "'label'", "row 9")


def test_non_finite_feature_is_named_when_read(tmp_path: Path) -> None:
    table = file_table("X", bar_times(0, 30), seed=0)
    f1 = table.column("f1").to_numpy().copy()
    f1[12] = np.nan
    table = table.set_column(3, "f1", pa.array(f1, pa.float32()))
    _one_file_lake(tmp_path, table, row_groups=[10, 20])
    index = scan(tmp_path, SplitBounds(T0 + 20 * BAR, T0 + 25 * BAR))
    with pytest.raises(DataError, match=r"X_2024-01\.parquet.*'f1'.*row group 1, row 2"):
        read_unit(index, 1, "train", FileCache())


def test_null_labels_and_mixed_symbols_are_named(tmp_path: Path) -> None:
    table = file_table("X", bar_times(0, 30), seed=0)
    labels = pa.array([None] + table.column("label").to_pylist()[1:], pa.int8())
    nulls = table.set_column(table.schema.get_field_index("label"), "label", labels)
    _one_file_lake(tmp_path / "a", nulls)
    _raises(tmp_path / "a", "X_2024-01.parquet", "'label'", "null")
    symbols = pa.array(["X"] * 29 + ["Y"], pa.string())
    mixed = table.set_column(table.schema.get_field_index("symbol"), "symbol", symbols)
    _one_file_lake(tmp_path / "b", mixed)
    _raises(tmp_path / "b", "X_2024-01.parquet", "one symbol per file")
