"""The predictions table and the Parquet file it is streamed into.

One row per window: `timestamp` (the window's last bar, timestamp[ms, UTC]), `symbol`,
`p_{class}` per class (float32, calibrated probabilities summing to 1 within float32
rounding), `predicted` (the class of the largest of those probabilities) and
`decision` (the class the sidecar's decision rule picks, `decision.decide`).
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

TS_TYPE = pa.timestamp("ms", tz="UTC")
#: Key of the output file's Parquet key-value metadata (what made the predictions).
META_KEY = b"saimp_predictions"


def output_schema(class_names: Sequence[str]) -> pa.Schema:
    """The columns of a predictions table, in order."""
    return pa.schema(
        [
            pa.field("timestamp", TS_TYPE),
            pa.field("symbol", pa.string()),
            *(pa.field(f"p_{name}", pa.float32()) for name in class_names),
            pa.field("predicted", pa.string()),
            pa.field("decision", pa.string()),
        ]
    )


def prediction_table(
    symbol: str,
    ts_ms: np.ndarray,
    probs: np.ndarray,
    decision: np.ndarray,
    class_names: Sequence[str],
) -> pa.Table:
    """The output rows of one symbol's windows.

    `ts_ms`: int64 (N,) epoch ms of each window's last bar; `probs`: (N, C) calibrated
    probabilities (any float type; stored as float32); `decision`: (N,) class indices.
    `predicted` is the argmax of the stored float32 probabilities, so it always agrees
    with the `p_*` columns a reader sees (ties go to the first class, as numpy's argmax).
    """
    n = len(ts_ms)
    p32 = np.asarray(probs, np.float32).reshape(n, len(class_names))
    names = pa.array(list(class_names), pa.string())
    columns: list[Any] = [
        pa.array(np.asarray(ts_ms, np.int64), pa.int64()).cast(TS_TYPE),
        pa.repeat(pa.scalar(symbol, pa.string()), n),
        *(pa.array(np.ascontiguousarray(p32[:, j])) for j in range(len(class_names))),
        names.take(pa.array(p32.argmax(axis=1) if n else np.empty(0, np.int64))),
        names.take(pa.array(np.asarray(decision, np.int64).reshape(n))),
    ]
    return pa.Table.from_arrays(columns, schema=output_schema(class_names))


@dataclass
class SymbolPredictions:
    """One symbol's predictions and how long they took."""

    symbol: str
    table: pa.Table
    seconds: float
    """From the symbol's data in memory (candles, or the lake's feature rows) to the
    calibrated probabilities: features, normalisation, windows, model, calibration.
    Reading files, loading the model and building the table are not counted."""


class PredictionWriter:
    """Streams tables into `path`: a temporary file beside it, renamed onto it by
    `commit()` after an fsync, so an error or a kill never leaves a partial output and
    an existing file at `path` stays whole until the new one is complete.

    Small tables (`--latest` gives one row per symbol) are buffered into row groups of
    about `flush_rows` rows; memory holds at most that many buffered rows.
    """

    def __init__(
        self,
        path: Path,
        schema: pa.Schema,
        metadata: dict[str, Any] | None = None,
        flush_rows: int = 65_536,
    ) -> None:
        self.path = Path(path)
        self.rows = 0
        self._flush_rows = flush_rows
        self._buffer: list[pa.Table] = []
        self._buffered = 0
        meta = {META_KEY: json.dumps(metadata or {}).encode()}
        self._schema = schema.with_metadata(meta)
        self._tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        self._fh = open(self._tmp, "wb")  # noqa: SIM115 - closed by commit/abort
        self._writer = pq.ParquetWriter(self._fh, self._schema)

    def write(self, table: pa.Table) -> None:
        if table.num_rows == 0:
            return
        self._buffer.append(table.replace_schema_metadata(self._schema.metadata))
        self._buffered += table.num_rows
        self.rows += table.num_rows
        if self._buffered >= self._flush_rows:
            self._flush()

    def _flush(self) -> None:
        if self._buffer:
            self._writer.write_table(pa.concat_tables(self._buffer))
        self._buffer, self._buffered = [], 0

    def commit(self) -> Path:
        """Finish the file and move it onto `path`."""
        self._flush()
        self._writer.close()
        self._fh.flush()
        os.fsync(self._fh.fileno())
        self._fh.close()
        os.replace(self._tmp, self.path)
        return self.path

    def abort(self) -> None:
        """Drop the temporary file; `path` is left as it was."""
        with contextlib.suppress(Exception):  # the file is being thrown away anyway
            self._writer.close()
        self._fh.close()
        self._tmp.unlink(missing_ok=True)

    def __enter__(self) -> PredictionWriter:
        return self

    def __exit__(self, exc_type: Any, *_: Any) -> None:
        if exc_type is not None and not self._fh.closed:
            self.abort()
