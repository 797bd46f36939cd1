"""The processed lake on disk: file names, columns and metadata (no reading logic).

* ``{SYMBOL}_{YYYY-MM}.parquet``: columns timestamp, symbol, the features (float32,
  in `FEATURE_NAMES` order), label (int8), horizon_end; then what the backtest needs:
  close (float64) and, for each trade the barriers define (long, superlong, short),
  its exit time, gross return and risk (`labels.barrier_trades`); sorted by timestamp; the
  key-value metadata ``saimp`` holds JSON {version, features, bar_ms, label}.
* ``manifest.json``: the same, plus every file's rows, time range and label counts,
  and what was left out of the raw data (bad rows, collapsed duplicates).
* ``_quarantine.parquet`` (only when `--on-bad-rows drop` left rows out): file, row,
  symbol, timestamp, reason of each. The leading ``_`` keeps the loader off it.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from src.config import LabelConfig
from src.core import constants as C
from src.data.features import FEATURE_NAMES
from src.data.labels import label_counts
from src.data.raw_checks import iso_ms

LAKE_VERSION = 2
"""2: time-true label horizons, the label settings' `barriers` key, the trade columns."""
TS_TYPE = pa.timestamp("ms", tz="UTC")
QUARANTINE_NAME = "_quarantine.parquet"
# Files prepare writes; anything else in --data-dir makes it refuse to replace it.
LAKE_FILE = re.compile(r"^[A-Za-z0-9.\-]+_\d{4}-\d{2}\.parquet$")


def month_slices(timestamp_ms: np.ndarray) -> list[tuple[str, slice]]:
    """(`YYYY-MM`, slice) for each calendar month (UTC) of sorted epoch-ms timestamps."""
    months = np.asarray(timestamp_ms, np.int64).astype("datetime64[ms]").astype("datetime64[M]")
    if months.size == 0:
        return []
    starts = np.flatnonzero(np.concatenate(([True], months[1:] != months[:-1])))
    ends = np.append(starts[1:], months.size)
    return [(str(months[s]), slice(int(s), int(e))) for s, e in zip(starts, ends, strict=True)]


def safe_symbol(symbol: str) -> str:
    """The symbol as it appears in file names: letters, digits, '.' and '-' only."""
    return re.sub(r"[^A-Za-z0-9.\-]", "-", symbol) or "UNKNOWN"


def lake_schema(feature_names: tuple[str, ...] = FEATURE_NAMES) -> pa.Schema:
    """Columns of a processed file, in order (without the file metadata)."""
    return pa.schema(
        [
            pa.field(C.TIMESTAMP_COL, TS_TYPE),
            pa.field(C.SYMBOL_COL, pa.string()),
            *(pa.field(name, pa.float32()) for name in feature_names),
            pa.field(C.LABEL_COL, pa.int8()),
            pa.field(C.HORIZON_END_COL, TS_TYPE),
            pa.field(C.CLOSE_COL, pa.float64()),
            *(
                pa.field(name, TS_TYPE if name.endswith("_exit") else pa.float64())
                for name in C.TRADE_COLUMNS
            ),
        ]
    )


def lake_metadata(bar_ms: int, label: LabelConfig) -> dict[str, Any]:
    """What every file's `saimp` metadata and the manifest share."""
    return {
        "version": LAKE_VERSION,
        "features": list(FEATURE_NAMES),
        "bar_ms": int(bar_ms),
        "label": label.to_meta(),
    }


def file_entry(name: str, table: pa.Table) -> dict[str, Any]:
    """The manifest's record of one written file."""
    ts = table.column(C.TIMESTAMP_COL).cast(pa.int64()).to_numpy()
    return {
        "name": name,
        "symbol": table.column(C.SYMBOL_COL)[0].as_py(),
        "rows": table.num_rows,
        "start": iso_ms(ts[0]),
        "end": iso_ms(ts[-1]),
        "label_counts": label_counts(table.column(C.LABEL_COL).to_numpy()),
    }


def write_symbol_files(
    symbol: str, table: pa.Table, out_dir: Path, *, meta: dict[str, Any], row_group_rows: int
) -> list[dict[str, Any]]:
    """Write one symbol's table as one file per calendar month; returns their entries."""
    metadata = {C.PARQUET_META_KEY: json.dumps(meta).encode()}
    ts = table.column(C.TIMESTAMP_COL).cast(pa.int64()).to_numpy()
    entries = []
    for month, part in month_slices(ts):
        name = f"{safe_symbol(symbol)}_{month}.parquet"
        chunk = table.slice(part.start, part.stop - part.start).replace_schema_metadata(metadata)
        pq.write_table(chunk, Path(out_dir) / name, row_group_size=row_group_rows)
        entries.append(file_entry(name, chunk))
    return entries
