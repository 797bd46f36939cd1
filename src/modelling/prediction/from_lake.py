"""Predictions from a prepared lake, streamed one file at a time.

The lake is scanned and checked first (`src.data.lake.scan_lake`: every file's
contract, files of a symbol disjoint in time), then refused in one line when its bar
interval, label settings or features differ from the checkpoint's
(`checkpointing.sidecar.lake_mismatch`, as `saimp evaluate` does). Each file is then read
whole (timestamp and feature columns only) together with a halo of the seq_len - 1
rows before it of the same symbol (kept from the file before, or read from the end of
the earlier files), so windows cross file boundaries exactly as the training loader's
do, and memory holds one file plus that halo. Files wholly outside [from, to) are not
read.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from src.core import constants as C
from src.core.errors import DataError
from src.data.lake import LakeFile, LakeIndex, column_ms, open_parquet, read_columns, scan_lake
from src.data.split import SplitBounds
from src.modelling.checkpointing.sidecar import lake_mismatch
from src.modelling.prediction.output import SymbolPredictions
from src.modelling.prediction.predictor import Predictor
from src.modelling.prediction.windows import rows_in_range, usable_rows, window_ends

logger = logging.getLogger(__name__)

#: Split bounds past any data: the scan then needs no split, and purges nothing.
_NO_SPLIT = SplitBounds(val_start_ms=2**62, test_start_ms=2**62)


@dataclass
class Rows:
    """Consecutive rows of one symbol: timestamps and normalised features."""

    ts: np.ndarray
    """int64 (n,) epoch ms."""
    features: np.ndarray
    """float32 (n, F), normalised."""

    @classmethod
    def empty(cls, n_features: int) -> Rows:
        return cls(np.empty(0, np.int64), np.empty((0, n_features), np.float32))

    def __len__(self) -> int:
        return len(self.ts)

    def tail(self, n: int) -> Rows:
        k = min(n, len(self))
        return Rows(self.ts[len(self) - k :], self.features[len(self) - k :])

    def __add__(self, later: Rows) -> Rows:
        return Rows(
            np.concatenate([self.ts, later.ts]), np.concatenate([self.features, later.features])
        )


def open_lake(predictor: Predictor, data_dir: Path, command: str = "predict") -> LakeIndex:
    """Scan the lake and check it against the checkpoint; `DataError` in one line."""
    index = scan_lake(
        data_dir,
        seq_len=predictor.seq_len,
        max_gap_bars=predictor.max_gap_bars,
        bounds=_NO_SPLIT,
    )
    mismatch = lake_mismatch(predictor.sidecar, index, command)
    if mismatch:
        raise DataError(mismatch)
    predictor.normalizer.check_features(index.feature_names, f"--data-dir {data_dir}")
    return index


def read_rows(predictor: Predictor, lf: LakeFile, row_groups: range | None = None) -> Rows:
    """Timestamps and normalised features of a file (or of some of its row groups)."""
    pf = open_parquet(lf.path)
    try:
        groups = range(len(lf.row_groups)) if row_groups is None else row_groups
        n = sum(lf.row_groups[g] for g in groups)
        ts = np.empty(n, np.int64)
        feats = np.empty((n, len(predictor.features)), np.float32)
        at = 0
        for g in groups:
            if not lf.row_groups[g]:
                continue
            table = read_columns(pf, lf.path, g, [C.TIMESTAMP_COL, *predictor.features])
            k = table.num_rows
            ts[at : at + k] = column_ms(table, C.TIMESTAMP_COL)
            for j, name in enumerate(predictor.features):
                feats[at : at + k, j] = table.column(name).to_numpy()
            at += k
    finally:
        pf.close()
    if at != n:
        raise DataError(f"{lf.path}: the file changed while it was read; run again")
    return Rows(ts, predictor.normalizer.apply_(feats))


def read_tail(predictor: Predictor, lf: LakeFile, n: int) -> Rows:
    """The last `n` rows of a file (fewer if it has fewer), reading only its last row groups."""
    first, held = len(lf.row_groups), 0
    while first > 0 and held < n:
        first -= 1
        held += lf.row_groups[first]
    return read_rows(predictor, lf, range(first, len(lf.row_groups))).tail(n)


def halo_before(predictor: Predictor, files: list[LakeFile], i: int) -> Rows:
    """The up to seq_len - 1 rows of the symbol's files before `files[i]` (oldest
    first), walking back over files shorter than that."""
    need = predictor.seq_len - 1
    rows = Rows.empty(len(predictor.features))
    for j in range(i - 1, -1, -1):
        if len(rows) >= need:
            break
        rows = read_tail(predictor, files[j], need - len(rows)) + rows
    return rows


def _ends(predictor: Predictor, rows: Rows, own_from: int, bar_ms: int, where: Path) -> np.ndarray:
    """Rows of `rows` at or after `own_from` that end a complete window."""
    usable = usable_rows(rows.features)
    if not usable[own_from:].all():  # prepare never writes one; a hand-made lake might
        logger.warning(
            "%s: %d rows with a non-finite feature are in no window",
            where,
            int((~usable[own_from:]).sum()),
        )
    ends = window_ends(
        rows.ts, usable, seq_len=predictor.seq_len, max_gap_ms=predictor.max_gap_ms(bar_ms)
    )
    return ends[ends >= own_from]


def _symbol_runs(index: LakeIndex) -> Iterator[tuple[str, list[LakeFile]]]:
    """(symbol, its files in time order); the scan sorted the files by (symbol, time)."""
    for symbol, files in itertools.groupby(index.files, key=lambda f: f.symbol):
        yield symbol, list(files)


def _predict_file(
    predictor: Predictor,
    rows: Rows,
    halo: int,
    bar_ms: int,
    from_ms: int | None,
    to_ms: int | None,
    latest: bool,
    where: Path,
) -> tuple[np.ndarray, np.ndarray]:
    """(timestamps, probabilities) of the windows ending in the file part of `rows`
    (after its `halo` rows) within [from_ms, to_ms); only the last one with `latest`."""
    lo, hi = rows_in_range(rows.ts, from_ms, to_ms)
    ends = _ends(predictor, rows, max(halo, lo), bar_ms, where)
    ends = ends[ends < hi]
    if latest:
        ends = ends[-1:]
    return rows.ts[ends], predictor.probabilities(rows.features, ends)


def predict_lake(
    predictor: Predictor,
    index: LakeIndex,
    *,
    from_ms: int | None = None,
    to_ms: int | None = None,
    latest: bool = False,
) -> Iterator[SymbolPredictions]:
    """Predictions for every window ending in [from_ms, to_ms): one item per file read,
    in (symbol, time) order. With `latest`, one item per symbol: its last such window,
    searched from its last file backwards. `seconds`: from the file's rows in memory to
    the probabilities (model and calibration)."""
    n_feat = len(predictor.features)
    for symbol, files in _symbol_runs(index):
        in_range = [
            i
            for i, lf in enumerate(files)
            if (to_ms is None or lf.first_ms < to_ms) and (from_ms is None or lf.last_ms >= from_ms)
        ]
        if latest:
            in_range = in_range[::-1]
        kept = Rows.empty(n_feat)  # the last rows of the file read just before
        previous, found = -2, False
        for i in in_range:
            if previous == i - 1:
                halo = kept.tail(predictor.seq_len - 1)
            else:
                halo = halo_before(predictor, files, i)
            rows = halo + read_rows(predictor, files[i])
            started = time.perf_counter()
            ts, probs = _predict_file(
                predictor, rows, len(halo), index.bar_ms, from_ms, to_ms, latest, files[i].path
            )
            seconds = time.perf_counter() - started
            kept, previous, found = rows, i, found or len(ts) > 0
            if len(ts) or not latest:
                yield SymbolPredictions(symbol, predictor.table(symbol, ts, probs), seconds)
            if latest and found:
                break
        if latest and not found:  # say so: the symbol has no window in the range
            yield SymbolPredictions(
                symbol, predictor.table(symbol, *_nothing(len(predictor.class_names))), 0.0
            )


def _nothing(n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    return np.empty(0, np.int64), np.empty((0, n_classes))
