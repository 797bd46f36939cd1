"""Scanning and reading the processed Parquet lake, one row group (work unit) at a time.

The lake is a flat directory of `{SYMBOL}_{YYYY-MM}.parquet` files written by
`saimp prepare`: one symbol per file, sorted by time, files of a symbol
covering disjoint time ranges, columns `timestamp`, `symbol`, features (float32),
`label` (int8 0..3), `horizon_end`, and the JSON key-value metadata `saimp` that names
the features and the bar interval. The Parquet files are the source of truth; the
manifest is not needed.

`scan_lake` validates every file and makes a `LakeIndex`: the files, and one work unit
per row group with the number of windows it ends in each split and their labels. It
reads only the `timestamp`, `horizon_end`, `label` and `symbol` columns, never the
features, so it is cheap next to an epoch. `read_unit` then loads one unit's features
for one split, with the halo of up to seq_len - 1 earlier rows of the same symbol
(from the previous row group or the previous file) that the unit's first windows need.

A window is the seq_len consecutive bars of one symbol ending at a bar; it is valid
when no two consecutive bars in it are more than `max_gap_bars` bar intervals apart.
Its split is that of its last bar (see `src.data.split`).
"""

from __future__ import annotations

import json
import logging
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from src.core import constants as C
from src.core.errors import DataError
from src.data.split import SPLITS, SplitBounds, assign_split, iso, split_index

log = logging.getLogger(__name__)

BoundsFn = Callable[[int, int], SplitBounds]

#: Window ids are file_index * ID_FILE_STRIDE + row of the window's last bar in its file.
ID_FILE_STRIDE = 2**32
#: Read buffer per open file: memory stays flat however large the file is.
_READ_BUFFER_BYTES = 1 << 20
_FIX_HINT = "re-run `saimp prepare` or remove the file from the data directory"


@dataclass(frozen=True)
class LakeFile:
    """One Parquet file of the lake."""

    path: Path
    symbol: str
    n_rows: int
    row_groups: tuple[int, ...]
    """Rows of each row group."""
    first_ms: int
    last_ms: int


@dataclass
class Units:
    """The work units (row groups) of the lake as parallel arrays, in the lake's fixed order."""

    file: np.ndarray
    """Index into `LakeIndex.files`."""
    row_group: np.ndarray
    row_start: np.ndarray
    """Row of the unit's first row inside its file."""
    n_rows: np.ndarray
    halo: np.ndarray
    """Earlier contiguous rows of the same symbol the unit's windows need (<= seq_len - 1)."""
    prev: np.ndarray
    """The unit those halo rows end in (-1 when `halo` is 0)."""
    first_ms: np.ndarray
    last_ms: np.ndarray
    windows: np.ndarray
    """(n_units, 3): windows ending in the unit, per split."""
    labels: np.ndarray
    """(n_units, 3, 4): those windows per split and class."""

    def __len__(self) -> int:
        return len(self.file)


@dataclass
class LakeIndex:
    """What `scan_lake` learnt about a lake; everything a dataset needs besides the features."""

    data_dir: Path
    feature_names: list[str]
    bar_ms: int
    seq_len: int
    max_gap_bars: float
    bounds: SplitBounds
    files: list[LakeFile]
    units: Units
    t_min_ms: int
    t_max_ms: int
    n_rows: int
    purged_windows: int
    """Complete windows in no split: their label horizon crosses a split boundary, they
    lie in an embargo, or before the training start (`src.data.split`)."""
    short_rows: int
    """Rows with fewer than seq_len - 1 contiguous bars before them (end no window)."""
    meta: dict[str, Any] = field(default_factory=dict)
    """The `saimp` metadata of the first file (label settings and so on)."""

    @property
    def max_gap_ms(self) -> float:
        return self.max_gap_bars * self.bar_ms

    @property
    def num_features(self) -> int:
        return len(self.feature_names)

    def num_windows(self, split: str) -> int:
        return int(self.units.windows[:, split_index(split)].sum())

    def label_counts(self, split: str) -> np.ndarray:
        """Windows of `split` per class (int64, length 4)."""
        return self.units.labels[:, split_index(split)].sum(axis=0)

    def summary(self) -> dict[str, Any]:
        """Plain numbers about the lake and its splits (for logs and the run summary)."""
        return {
            "data_dir": str(self.data_dir),
            "files": len(self.files),
            "units": len(self.units),
            "rows": self.n_rows,
            "symbols": sorted({f.symbol for f in self.files}),
            "features": len(self.feature_names),
            "bar_ms": self.bar_ms,
            "time_range": [iso(self.t_min_ms), iso(self.t_max_ms)],
            "bounds": self.bounds.to_dict(),
            "windows": {s: self.num_windows(s) for s in SPLITS},
            "labels": {
                s: dict(zip(C.CLASS_NAMES, self.label_counts(s).tolist(), strict=True))
                for s in SPLITS
            },
            "purged_windows": self.purged_windows,
            "short_rows": self.short_rows,
        }


# ---------------------------------------------------------------------------- pure helpers


def run_lengths(ts_ms: np.ndarray, carry: int, max_gap_ms: float) -> np.ndarray:
    """Length of the contiguous run of bars ending at each row.

    A run breaks where consecutive bars are more than `max_gap_ms` apart; `carry` is
    the length of the run the first row continues (0 when it starts a new one).
    """
    n = len(ts_ms)
    rows = np.arange(n, dtype=np.int64)
    breaks = np.zeros(n, dtype=bool)
    breaks[1:] = np.diff(ts_ms) > max_gap_ms
    run_start = np.maximum.accumulate(np.where(breaks, rows, -int(carry)))
    return rows - run_start + 1


def unit_windows(
    ts_ms: np.ndarray,
    horizon_ms: np.ndarray,
    carry: int,
    *,
    seq_len: int,
    max_gap_ms: float,
    bounds: SplitBounds,
) -> tuple[np.ndarray, int]:
    """Split code of the window ending at each row (-2: no complete window), and the carry out.

    The carry out is the run length at the last row, capped at seq_len - 1 (all a next
    unit needs to know).
    """
    runs = run_lengths(ts_ms, carry, max_gap_ms)
    codes = assign_split(ts_ms, horizon_ms, bounds)
    codes[runs < seq_len] = -2
    carry_out = int(min(runs[-1], seq_len - 1)) if len(runs) else int(carry)
    return codes, carry_out


# ---------------------------------------------------------------------------- file access


def open_parquet(path: Path) -> pq.ParquetFile:
    """Open a Parquet file for row-group reads with bounded buffers, or raise DataError."""
    try:
        return pq.ParquetFile(
            path,
            memory_map=False,
            buffer_size=_READ_BUFFER_BYTES,
            pre_buffer=False,
        )
    except FileNotFoundError:
        raise DataError(
            f"{path}: file not found; it was removed after the lake was scanned"
        ) from None
    except (OSError, pa.ArrowException) as err:
        raise DataError(f"{path}: not a readable Parquet file ({err}); {_FIX_HINT}") from None


class FileCache:
    """Per-process read state: a few open `ParquetFile`s and the tails of recent units.

    Opening a file re-reads its footer; keeping the handles saves that on every unit.
    The last seq_len - 1 raw feature rows of recently read units are kept so that, in
    stream order, a unit's halo costs no second read of the unit before it. Not
    pickled: each DataLoader worker opens its own.
    """

    def __init__(self, max_open: int = 8, max_tails: int = 8) -> None:
        self.max_open = max_open
        self.max_tails = max_tails
        self._open: OrderedDict[Path, pq.ParquetFile] = OrderedDict()
        self._tails: OrderedDict[int, np.ndarray] = OrderedDict()

    def get(self, path: Path) -> pq.ParquetFile:
        pf = self._open.pop(path, None)
        if pf is None:
            pf = open_parquet(path)
            while len(self._open) >= self.max_open:
                _, old = self._open.popitem(last=False)
                old.close()
        self._open[path] = pf
        return pf

    def keep_tail(self, unit: int, rows: np.ndarray) -> None:
        self._tails[unit] = rows
        while len(self._tails) > self.max_tails:
            self._tails.popitem(last=False)

    def tail(self, unit: int) -> np.ndarray | None:
        return self._tails.get(unit)

    def close(self) -> None:
        for pf in self._open.values():
            pf.close()
        self._open.clear()
        self._tails.clear()

    def __getstate__(self) -> dict[str, Any]:
        return {"max_open": self.max_open, "max_tails": self.max_tails}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["max_open"], state["max_tails"])


def read_columns(pf: pq.ParquetFile, path: Path, row_group: int, columns: list[str]) -> pa.Table:
    """Read some columns of one row group, turning decoding failures into DataError."""
    try:
        # One thread: a row group is small, and pyarrow's pool only adds hand-offs
        # (measured 2x slower on 2 busy cores); loader workers give the parallelism.
        return pf.read_row_group(row_group, columns=columns, use_threads=False)
    except (OSError, pa.ArrowException) as err:
        raise DataError(
            f"{path}: row group {row_group} cannot be read ({err}); {_FIX_HINT}"
        ) from None


def column_ms(table: pa.Table, name: str) -> np.ndarray:
    """A timestamp (any unit) or int64-milliseconds column as int64 epoch ms."""
    col = table.column(name)
    if pa.types.is_timestamp(col.type) and col.type.unit != "ms":
        col = col.cast(pa.timestamp("ms", tz=col.type.tz), safe=False)
    return np.ascontiguousarray(col.cast(pa.int64()).to_numpy())


# ---------------------------------------------------------------------------- validation


_READABLE_VERSIONS = (1, 2)


def _read_meta(pf: pq.ParquetFile, path: Path) -> dict[str, Any]:
    raw = (pf.schema_arrow.metadata or {}).get(C.PARQUET_META_KEY)
    if raw is None:
        return {}
    try:
        meta = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DataError(
            f"{path}: the 'saimp' metadata is not valid JSON ({err}); {_FIX_HINT}"
        ) from None
    version = meta.get("version", 1) if isinstance(meta, dict) else meta
    if version not in _READABLE_VERSIONS:  # 1: label horizons counted in bars; 2: in time
        raise DataError(
            f"{path}: 'saimp' metadata version {version!r} is not supported (expected "
            f"{' or '.join(map(str, _READABLE_VERSIONS))}); {_FIX_HINT}"
        )
    return meta


def _check_schema(path: Path, schema: pa.Schema, features: list[str]) -> None:
    """Raise DataError naming the file and column for a missing or mistyped column."""
    names = set(schema.names)
    required = [C.TIMESTAMP_COL, C.LABEL_COL, C.HORIZON_END_COL, *features]
    missing = [c for c in required if c not in names]
    if missing:
        raise DataError(
            f"{path}: missing column(s) {', '.join(missing)} (has: {', '.join(schema.names)}); "
            f"{_FIX_HINT}"
        )

    def bad(col: str, expected: str) -> DataError:
        return DataError(
            f"{path}: column {col!r} has type {schema.field(col).type}, expected {expected}; "
            f"{_FIX_HINT}"
        )

    for col in (C.TIMESTAMP_COL, C.HORIZON_END_COL):
        t = schema.field(col).type
        if not (pa.types.is_timestamp(t) or t == pa.int64()):
            raise bad(col, "timestamp[ms, tz=UTC]")
    if not pa.types.is_integer(schema.field(C.LABEL_COL).type):
        raise bad(C.LABEL_COL, "int8 (0..3)")
    for col in features:
        if schema.field(col).type != pa.float32():
            raise bad(col, "float32")
    if C.SYMBOL_COL in names:
        t = schema.field(C.SYMBOL_COL).type
        if pa.types.is_dictionary(t):
            t = t.value_type
        if not (pa.types.is_string(t) or pa.types.is_large_string(t)):
            raise bad(C.SYMBOL_COL, "string")


def _infer_bar_ms(ts_ms: np.ndarray, path: Path) -> int:
    """Most common spacing of consecutive bars (used only when the metadata lacks bar_ms)."""
    diffs = np.diff(ts_ms)
    diffs = diffs[diffs > 0]
    if not len(diffs):
        raise DataError(f"{path}: cannot infer the bar interval (no 'saimp' metadata); {_FIX_HINT}")
    values, counts = np.unique(diffs, return_counts=True)
    return int(values[np.argmax(counts)])


def _symbol_values(table: pa.Table) -> list[str]:
    """Distinct symbols of a row group."""
    col = table.column(C.SYMBOL_COL)
    if pa.types.is_dictionary(col.type):
        col = col.cast(col.type.value_type)
    return sorted(str(v) for v in pc.unique(col).to_pylist())


@dataclass
class _FileInfo:
    file: LakeFile
    features: list[str]
    bar_ms: int | None
    meta: dict[str, Any]


def _inspect_file(path: Path) -> _FileInfo | None:
    """Open and check one file; None for a file with no rows (nothing to learn from)."""
    pf = open_parquet(path)
    try:
        meta = _read_meta(pf, path)
        schema = pf.schema_arrow
        features = meta.get("features")
        if features is None:
            features = [n for n in schema.names if n not in C.NON_FEATURE_COLUMNS]
        features = [str(f) for f in features]
        if not features:
            raise DataError(f"{path}: no feature columns; {_FIX_HINT}")
        _check_schema(path, schema, features)
        md = pf.metadata
        sizes = tuple(md.row_group(i).num_rows for i in range(md.num_row_groups))
        if sum(sizes) == 0:
            log.warning("%s has no rows; skipped", path)
            return None
        first_rg = next(i for i, n in enumerate(sizes) if n)
        last_rg = max(i for i, n in enumerate(sizes) if n)
        has_symbol = C.SYMBOL_COL in schema.names
        head_cols = [C.TIMESTAMP_COL] + ([C.SYMBOL_COL] if has_symbol else [])
        head = read_columns(pf, path, first_rg, head_cols)
        first_ts = column_ms(head, C.TIMESTAMP_COL)
        tail_ts = column_ms(read_columns(pf, path, last_rg, [C.TIMESTAMP_COL]), C.TIMESTAMP_COL)
        if has_symbol:
            symbol = str(head.column(C.SYMBOL_COL)[0].as_py())
        else:
            # No symbol column: the file name carries it ({SYMBOL}_{YYYY-MM}.parquet).
            symbol = path.stem.rsplit("_", 1)[0] if "_" in path.stem else ""
        bar_ms = meta.get("bar_ms")
        if bar_ms is None:
            bar_ms = _infer_bar_ms(first_ts, path) if len(first_ts) > 1 else None
        lake_file = LakeFile(
            path=path,
            symbol=symbol,
            n_rows=int(sum(sizes)),
            row_groups=sizes,
            first_ms=int(first_ts[0]),
            last_ms=int(tail_ts[-1]),
        )
        return _FileInfo(lake_file, features, None if bar_ms is None else int(bar_ms), meta)
    finally:
        pf.close()


def list_parquet_files(data_dir: Path) -> list[Path]:
    """The lake's Parquet files, or DataError when the directory is missing or has none."""
    data_dir = Path(data_dir)
    if data_dir.is_file():
        raise DataError(
            f"--data-dir {data_dir} is a file; pass the lake directory (what `saimp prepare "
            "--data-dir DIR` wrote)"
        )
    if not data_dir.is_dir():
        raise DataError(
            f"--data-dir {data_dir} does not exist; create the lake with `saimp prepare "
            f"--raw-dir RAW_DIR --data-dir {data_dir}`"
        )
    # Hidden and underscore files are writers' temporaries or markers, not data.
    files = sorted(
        p for p in data_dir.glob("*.parquet") if p.is_file() and not p.name.startswith((".", "_"))
    )
    if not files:
        raise DataError(
            f"--data-dir {data_dir} has no *.parquet files; create the lake with `saimp "
            f"prepare --raw-dir RAW_DIR --data-dir {data_dir}`"
        )
    if _looks_raw(files[0]):
        raise DataError(
            f"--data-dir {data_dir} holds raw candles ({files[0].name} has open/high/low/close "
            "and no labels), not a prepared lake: prepare them with `saimp prepare --raw-dir "
            f"{data_dir} --data-dir OTHER_DIR`, then pass --data-dir OTHER_DIR"
        )
    return files


def _looks_raw(path: Path) -> bool:
    """Whether a Parquet file has the raw candle columns and no label (not a lake file)."""
    try:
        names = set(pq.read_schema(path).names)
    except (OSError, pa.ArrowException):
        return False  # unreadable: the scan names the file with its own error
    return C.LABEL_COL not in names and {"open", "high", "low", "close"} <= names


def _order_files(infos: list[_FileInfo]) -> list[_FileInfo]:
    """Sort by (symbol, time) and check the lake-wide contract across files."""
    ref = infos[0]
    bar_ms = next((i.bar_ms for i in infos if i.bar_ms is not None), None)
    for info in infos:
        if info.features != ref.features:
            raise DataError(
                f"{info.file.path}: feature columns {info.features} differ from "
                f"{ref.features} in {ref.file.path}; all files must come from the same "
                "`prepare` run, re-run it"
            )
        if info.bar_ms is not None and info.bar_ms != bar_ms:
            raise DataError(
                f"{info.file.path}: bar interval {info.bar_ms} ms differs from {bar_ms} ms of "
                "other files; keep one bar interval per data directory"
            )
    if bar_ms is None or bar_ms <= 0:
        raise DataError(f"{ref.file.path}: cannot tell the bar interval; {_FIX_HINT}")
    ordered = sorted(infos, key=lambda i: (i.file.symbol, i.file.first_ms))
    for a, b in zip(ordered, ordered[1:], strict=False):
        if a.file.symbol == b.file.symbol and b.file.first_ms <= a.file.last_ms:
            raise DataError(
                f"{b.file.path} and {a.file.path} overlap in time for symbol "
                f"{a.file.symbol!r} ({iso(b.file.first_ms)} <= {iso(a.file.last_ms)}); each "
                "symbol's files must cover disjoint time ranges: remove the duplicate"
            )
    for info in ordered:
        info.bar_ms = bar_ms
    return ordered


# ---------------------------------------------------------------------------- scanning


def _check_rows(
    path: Path,
    row_start: int,
    ts: np.ndarray,
    horizon: np.ndarray,
    labels: np.ndarray,
    prev_ts: int | None,
) -> None:
    """Per-row contract checks of a unit; the error names the file and the row."""
    steps = np.diff(ts, prepend=ts[:1] - 1 if prev_ts is None else np.int64(prev_ts))
    bad = np.flatnonzero(steps <= 0)
    if len(bad):
        row = int(bad[0])
        what = "duplicate" if steps[row] == 0 else "out-of-order"
        raise DataError(
            f"{path}: {what} timestamp {iso(int(ts[row]))} at row {row_start + row}; rows "
            f"must be sorted by strictly increasing time within a symbol; {_FIX_HINT}"
        )
    bad = np.flatnonzero((labels < 0) | (labels >= C.NUM_CLASSES))
    if len(bad):
        row = int(bad[0])
        raise DataError(
            f"{path}: column 'label' has value {int(labels[row])} at row {row_start + row}, "
            f"expected 0..{C.NUM_CLASSES - 1}; {_FIX_HINT}"
        )
    bad = np.flatnonzero(horizon <= ts)
    if len(bad):
        row = int(bad[0])
        raise DataError(
            f"{path}: column 'horizon_end' is not after 'timestamp' at row {row_start + row}; "
            f"{_FIX_HINT}"
        )


@dataclass
class _Chain:
    """Where the scan stands in one symbol's run of bars (carried from unit to unit)."""

    carry: int = 0
    """Length of the contiguous run the next unit continues (capped at seq_len - 1)."""
    prev_unit: int = -1
    prev_ts: int | None = None


def _read_scan_columns(
    pf: pq.ParquetFile, lf: LakeFile, rg: int, row_start: int, prev_ts: int | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Timestamps, horizons and labels of one unit, checked against the contract."""
    has_symbol = C.SYMBOL_COL in pf.schema_arrow.names
    cols = [C.TIMESTAMP_COL, C.HORIZON_END_COL, C.LABEL_COL]
    table = read_columns(pf, lf.path, rg, cols + ([C.SYMBOL_COL] if has_symbol else []))
    for col in table.column_names:
        if table.column(col).null_count:
            raise DataError(
                f"{lf.path}: column {col!r} has empty (null) values in row group {rg}; {_FIX_HINT}"
            )
    ts = column_ms(table, C.TIMESTAMP_COL)
    horizon = column_ms(table, C.HORIZON_END_COL)
    labels = table.column(C.LABEL_COL).to_numpy().astype(np.int64)
    _check_rows(lf.path, row_start, ts, horizon, labels, prev_ts)
    if has_symbol and (symbols := _symbol_values(table)) != [lf.symbol]:
        raise DataError(
            f"{lf.path}: row group {rg} holds symbols {symbols}, expected only {lf.symbol!r}; "
            "prepare writes one symbol per file, re-run it"
        )
    return ts, horizon, labels


def _count_windows(codes: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """(3, 4) windows per split and class among a unit's split codes."""
    in_split = codes >= 0
    flat = codes[in_split].astype(np.int64) * C.NUM_CLASSES + labels[in_split]
    counts = np.bincount(flat, minlength=len(SPLITS) * C.NUM_CLASSES)
    return counts.reshape(len(SPLITS), C.NUM_CLASSES)


def scan_lake(
    data_dir: Path | str,
    *,
    seq_len: int,
    max_gap_bars: float,
    bounds: SplitBounds | BoundsFn,
) -> LakeIndex:
    """Validate a processed lake and index its work units.

    `bounds` is either fixed `SplitBounds` or a function of the lake's (t_min_ms,
    t_max_ms), called once the time range is known (see `bounds_from_config`).
    Raises `DataError` naming the file (and column or row) for any broken contract.
    """
    if seq_len < 1:
        raise ValueError(f"seq_len must be >= 1, got {seq_len}")
    data_dir = Path(data_dir)
    infos = [i for i in map(_inspect_file, list_parquet_files(data_dir)) if i is not None]
    if not infos:
        raise DataError(f"data directory {data_dir} holds only empty Parquet files; {_FIX_HINT}")
    infos = _order_files(infos)
    files = [i.file for i in infos]
    bar_ms = int(infos[0].bar_ms or 0)
    max_gap_ms = max_gap_bars * bar_ms
    t_min = min(f.first_ms for f in files)
    t_max = max(f.last_ms for f in files)
    split_at = bounds if isinstance(bounds, SplitBounds) else bounds(t_min, t_max)

    rows: dict[str, list[Any]] = {k: [] for k in Units.__dataclass_fields__}
    purged = short = 0
    chain = _Chain()
    for fi, lf in enumerate(files):
        if fi == 0 or files[fi - 1].symbol != lf.symbol:
            chain = _Chain()  # a new symbol starts from nothing
        pf = open_parquet(lf.path)
        row_start = 0
        try:
            for rg, n in enumerate(lf.row_groups):
                if n == 0:
                    continue
                ts, horizon, labels = _read_scan_columns(pf, lf, rg, row_start, chain.prev_ts)
                if chain.prev_ts is not None and ts[0] - chain.prev_ts > max_gap_ms:
                    chain.carry, chain.prev_unit = 0, -1  # a gap: no window reaches back
                codes, carry_out = unit_windows(
                    ts,
                    horizon,
                    chain.carry,
                    seq_len=seq_len,
                    max_gap_ms=max_gap_ms,
                    bounds=split_at,
                )
                purged += int(np.count_nonzero(codes == -1))
                short += int(np.count_nonzero(codes == -2))
                per_class = _count_windows(codes, labels)
                for key, value in (
                    ("file", fi),
                    ("row_group", rg),
                    ("row_start", row_start),
                    ("n_rows", n),
                    ("halo", chain.carry),
                    ("prev", chain.prev_unit if chain.carry else -1),
                    ("first_ms", int(ts[0])),
                    ("last_ms", int(ts[-1])),
                    ("windows", per_class.sum(axis=1)),
                    ("labels", per_class),
                ):
                    rows[key].append(value)
                chain = _Chain(carry_out, len(rows["file"]) - 1, int(ts[-1]))
                row_start += n
        finally:
            pf.close()

    units = _stack_units(rows)
    return LakeIndex(
        data_dir=data_dir,
        feature_names=infos[0].features,
        bar_ms=bar_ms,
        seq_len=seq_len,
        max_gap_bars=max_gap_bars,
        bounds=split_at,
        files=files,
        units=units,
        t_min_ms=t_min,
        t_max_ms=t_max,
        n_rows=int(units.n_rows.sum()),
        purged_windows=purged,
        short_rows=short,
        meta=infos[0].meta,
    )


def _stack_units(rows: dict[str, list[Any]]) -> Units:
    arrays = {k: np.asarray(v, dtype=np.int64) for k, v in rows.items()}
    arrays["windows"] = arrays["windows"].reshape(-1, len(SPLITS))
    arrays["labels"] = arrays["labels"].reshape(-1, len(SPLITS), C.NUM_CLASSES)
    return Units(**arrays)


def bounds_from_config(data_cfg: Any) -> BoundsFn:
    """The split bounds a `DataConfig` asks for, as a function of the lake's time range."""
    from src.data.split import split_bounds

    def bounds(t_min_ms: int, t_max_ms: int) -> SplitBounds:
        return split_bounds(
            t_min_ms,
            t_max_ms,
            val_fraction=data_cfg.val_fraction,
            test_fraction=data_cfg.test_fraction,
            val_start=data_cfg.val_start,
            test_start=data_cfg.test_start,
            embargo_minutes=getattr(data_cfg, "embargo_minutes", 0),
            train_start=getattr(data_cfg, "train_start", None),
        )

    return bounds


def scan_lake_for(data_cfg: Any, data_dir: Path | str) -> LakeIndex:
    """`scan_lake` with seq_len, max_gap_bars and split settings from a `DataConfig`."""
    return scan_lake(
        data_dir,
        seq_len=data_cfg.seq_len,
        max_gap_bars=data_cfg.max_gap_bars,
        bounds=bounds_from_config(data_cfg),
    )


# ---------------------------------------------------------------------------- reading units


@dataclass
class UnitWindows:
    """One unit loaded for one split: features (halo first) and its windows of that split."""

    features: np.ndarray
    """(halo + n_rows, F) float32, C-contiguous."""
    starts: np.ndarray
    """(W,) int64: row in `features` where each window starts."""
    labels: np.ndarray
    """(W,) int64: label of each window (that of its last bar)."""
    ids: np.ndarray
    """(W,) int64: file_index * 2**32 + row of the window's last bar in its file."""


def _fill_features(
    out: np.ndarray, table: pa.Table, features: list[str], src_rows: slice, path: Path, rg: int
) -> None:
    """Copy feature columns of a row group into `out` column by column, checking they are finite."""
    for j, name in enumerate(features):
        col = table.column(name).to_numpy()[src_rows]
        out[:, j] = col
        if not np.isfinite(col).all():
            bad = int(np.flatnonzero(~np.isfinite(col))[0]) + (src_rows.start or 0)
            raise DataError(
                f"{path}: column {name!r} has a non-finite value (NaN or inf) in row group {rg}, "
                f"row {bad} of the group; features must be finite, {_FIX_HINT}"
            )


def read_halo(index: LakeIndex, unit: int, cache: FileCache) -> np.ndarray:
    """The `halo` raw feature rows before `unit` (oldest first), from earlier units of its
    symbol: from the cache's tails when those units were just read, else from disk."""
    units = index.units
    need = int(units.halo[unit])
    out = np.empty((need, index.num_features), dtype=np.float32)
    src = int(units.prev[unit])
    while need > 0:
        if src < 0:
            raise DataError(
                f"{index.files[units.file[unit]].path}: the lake changed since it was scanned; "
                "restart the run"
            )
        n = int(units.n_rows[src])
        take = min(need, n)
        tail = cache.tail(src)
        if tail is not None and len(tail) >= take:
            out[need - take : need] = tail[len(tail) - take :]
        else:
            lf = index.files[units.file[src]]
            rg = int(units.row_group[src])
            table = read_columns(cache.get(lf.path), lf.path, rg, index.feature_names)
            _fill_features(
                out[need - take : need], table, index.feature_names, slice(n - take, n), lf.path, rg
            )
        need -= take
        src = int(units.prev[src])
    return out


def read_unit(index: LakeIndex, unit: int, split: str, cache: FileCache) -> UnitWindows:
    """Load one unit's features (with halo) and locate its windows of `split`.

    The split codes are recomputed from the unit's own timestamps with the same pure
    function the scan used, so no per-row state has to be kept in the index.
    """
    units = index.units
    lf = index.files[units.file[unit]]
    rg = int(units.row_group[unit])
    halo = int(units.halo[unit])
    n = int(units.n_rows[unit])
    cols = [C.TIMESTAMP_COL, C.HORIZON_END_COL, C.LABEL_COL, *index.feature_names]
    table = read_columns(cache.get(lf.path), lf.path, rg, cols)
    ts = column_ms(table, C.TIMESTAMP_COL)
    if len(ts) != n:
        raise DataError(f"{lf.path}: the file changed since it was scanned; restart the run")
    codes, _ = unit_windows(
        ts,
        column_ms(table, C.HORIZON_END_COL),
        halo,
        seq_len=index.seq_len,
        max_gap_ms=index.max_gap_ms,
        bounds=index.bounds,
    )
    ends = np.flatnonzero(codes == split_index(split))
    if len(ends) != units.windows[unit, split_index(split)]:
        raise DataError(f"{lf.path}: the file changed since it was scanned; restart the run")
    features = np.empty((halo + n, index.num_features), dtype=np.float32)
    if halo:
        features[:halo] = read_halo(index, unit, cache)
    _fill_features(features[halo:], table, index.feature_names, slice(0, n), lf.path, rg)
    cache.keep_tail(unit, features[max(0, len(features) - index.seq_len + 1) :].copy())
    labels = table.column(C.LABEL_COL).to_numpy().astype(np.int64)
    return UnitWindows(
        features=features,
        starts=ends + (halo - index.seq_len + 1),
        labels=labels[ends],
        ids=int(units.file[unit]) * ID_FILE_STRIDE + int(units.row_start[unit]) + ends,
    )
