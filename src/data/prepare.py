"""Turn raw candles into the processed Parquet lake the streaming loader reads.

    saimp prepare --raw-dir data/raw/synthetic --data-dir data/processed
        [--row-group-rows 8192] [--horizon-minutes 120] [--upper1-pct 0.8]
        [--upper2-pct 1.6] [--lower-pct 0.75]

For each symbol: read and check every raw file (`raw_io`), join them in time order,
compute causal features (`features`) and triple-barrier labels (`labels`) over the
symbol's whole history (so labels near a month's end look into the next month, and
only the first bars lack the feature warm-up), keep the rows that have both, and write
one file per calendar month (UTC).

The lake (`--out`):
  * ``{SYMBOL}_{YYYY-MM}.parquet``: columns timestamp, symbol, the features (float32,
    in `FEATURE_NAMES` order), label (int8), horizon_end; sorted by timestamp; written
    in row groups of ``--row-group-rows`` rows; the key-value metadata ``saimp`` holds
    JSON {version, features, bar_ms, label}.
  * ``manifest.json``: the same, plus every file's rows, time range and label counts.

The lake is built in a staging directory next to ``--out`` and swapped in only when
complete, so a failed run leaves the previous lake untouched. ``--out`` must be new,
empty, or a lake written by this command; anything else is refused rather than deleted.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import secrets
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from src.config import Config, DataConfig, LabelConfig
from src.core import constants as C
from src.core.errors import ArgumentParser, DataError, UserError
from src.core.paths import writable_dir
from src.data.features import FEATURE_NAMES, WARMUP_BARS, compute_features
from src.data.labels import horizon_bars, label_counts, triple_barrier_labels
from src.data.raw_io import RawCandles, iso_ms, read_raw_dir
from src.flags import ConfigFlags, alias

LAKE_VERSION = 1
TS_TYPE = pa.timestamp("ms", tz="UTC")
# Files this command writes; anything else in --out makes it refuse to replace --out.
_LAKE_FILE = re.compile(r"^[A-Za-z0-9.\-]+_\d{4}-\d{2}\.parquet$")


# ------------------------------------------------------------------ pure helpers


def month_slices(timestamp_ms: np.ndarray) -> list[tuple[str, slice]]:
    """(`YYYY-MM`, slice) for each calendar month (UTC) of sorted epoch-ms timestamps."""
    months = np.asarray(timestamp_ms, np.int64).astype("datetime64[ms]").astype("datetime64[M]")
    if months.size == 0:
        return []
    starts = np.flatnonzero(np.concatenate(([True], months[1:] != months[:-1])))
    ends = np.append(starts[1:], months.size)
    return [(str(months[s]), slice(int(s), int(e))) for s, e in zip(starts, ends, strict=True)]


def infer_bar_ms(timestamp_ms: np.ndarray) -> int:
    """The bar interval: the median step between consecutive timestamps (gaps don't
    move a median)."""
    if timestamp_ms.shape[0] < 2:
        raise ValueError("need at least two bars to infer the bar interval")
    return int(np.median(np.diff(timestamp_ms)))


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
        ]
    )


def lake_metadata(bar_ms: int, label: LabelConfig) -> dict[str, Any]:
    """What every file's `saimp` metadata and the manifest share."""
    return {
        "version": LAKE_VERSION,
        "features": list(FEATURE_NAMES),
        "bar_ms": int(bar_ms),
        "label": {
            "horizon_minutes": label.horizon_minutes,
            "upper1_pct": label.upper1_pct,
            "upper2_pct": label.upper2_pct,
            "lower_pct": label.lower_pct,
        },
    }


def build_symbol_table(candles: RawCandles, *, horizon: int, label: LabelConfig) -> pa.Table:
    """Features and labels of one symbol's bars, as a table in `lake_schema` order.

    Keeps the bars with a full feature warm-up behind them and a full label horizon
    ahead (and, defensively, finite features).
    """
    feats = compute_features(
        candles.open,
        candles.high,
        candles.low,
        candles.close,
        candles.volume,
        candles.taker_buy_volume,
    )
    labels = triple_barrier_labels(
        candles.high,
        candles.low,
        candles.close,
        horizon=horizon,
        upper1_pct=label.upper1_pct,
        upper2_pct=label.upper2_pct,
        lower_pct=label.lower_pct,
    )
    m = labels.label.shape[0]  # bars with a full horizon ahead: 0 .. m-1
    keep = np.flatnonzero(np.isfinite(feats[:m]).all(axis=1))
    ts = candles.timestamp
    columns = [
        pa.array(ts[keep], TS_TYPE),
        pa.repeat(pa.scalar(candles.symbol, pa.string()), keep.size),
        *(pa.array(np.ascontiguousarray(feats[keep, j])) for j in range(len(FEATURE_NAMES))),
        pa.array(labels.label[keep], pa.int8()),
        pa.array(ts[labels.decided_at[keep]], TS_TYPE),
    ]
    return pa.Table.from_arrays(columns, schema=lake_schema())


# --------------------------------------------------------------- directory handling


@contextlib.contextmanager
def staging_dir(target: Path) -> Iterator[Path]:
    """A fresh directory next to `target` (same file system, so a rename can swap it
    in); removed on exit unless `replace_dir` moved it into place."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    # Not tempfile.mkdtemp: its 0700 mode would end up on the lake. mkdir honours umask.
    stage = target.parent / f".{target.name}.staging-{os.getpid()}-{secrets.token_hex(4)}"
    stage.mkdir()
    try:
        yield stage
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def replace_dir(stage: Path, target: Path) -> None:
    """Put `stage` where `target` is, replacing it; the old `target` survives a failure."""
    if not target.exists():
        os.rename(stage, target)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
    os.rename(target, old / target.name)
    try:
        os.rename(stage, target)
    except OSError:
        os.rename(old / target.name, target)
        raise
    finally:
        shutil.rmtree(old, ignore_errors=True)


def _check_out_dir(out_dir: Path, raw_dir: Path) -> None:
    """Refuse a --data-dir that would destroy something prepare did not write."""
    if out_dir.exists() and not out_dir.is_dir():
        raise UserError(f"--data-dir {out_dir} is a file; give a directory")
    if out_dir.resolve() == raw_dir.resolve():
        raise UserError(
            f"--data-dir {out_dir} is the raw directory (--raw-dir); write the lake elsewhere"
        )
    if not out_dir.is_dir():
        return
    entries = sorted(out_dir.iterdir())
    if not entries:
        return
    foreign = [
        p.name
        for p in entries
        if not (p.is_file() and (p.name == C.MANIFEST_NAME or _LAKE_FILE.match(p.name)))
    ]
    if foreign or not (out_dir / C.MANIFEST_NAME).is_file():
        example = foreign[0] if foreign else f"no {C.MANIFEST_NAME}"
        raise UserError(
            f"--data-dir {out_dir} is not empty and not a lake written by prepare ({example}); "
            "choose a new or empty directory"
        )


# ------------------------------------------------------------------------ writing


def _file_entry(name: str, table: pa.Table) -> dict[str, Any]:
    ts = table.column(C.TIMESTAMP_COL).cast(pa.int64()).to_numpy()
    return {
        "name": name,
        "symbol": table.column(C.SYMBOL_COL)[0].as_py(),
        "rows": table.num_rows,
        "start": iso_ms(ts[0]),
        "end": iso_ms(ts[-1]),
        "label_counts": label_counts(table.column(C.LABEL_COL).to_numpy()),
    }


def write_lake(
    tables: Iterable[tuple[str, pa.Table]],
    out_dir: Path,
    *,
    meta: dict[str, Any],
    row_group_rows: int,
    source: str,
) -> dict[str, Any]:
    """Write one file per symbol and month plus the manifest into `out_dir` (which must
    exist and be empty); returns the manifest.

    `tables` yields (symbol, table) pairs; a generator keeps one symbol in memory.
    """
    schema = lake_schema().with_metadata({C.PARQUET_META_KEY: json.dumps(meta).encode()})
    files: list[dict[str, Any]] = []
    for symbol, table in tables:
        ts = table.column(C.TIMESTAMP_COL).cast(pa.int64()).to_numpy()
        for month, part in month_slices(ts):
            name = f"{safe_symbol(symbol)}_{month}.parquet"
            chunk = table.slice(part.start, part.stop - part.start).replace_schema_metadata(
                schema.metadata
            )
            pq.write_table(chunk, out_dir / name, row_group_size=row_group_rows)
            files.append(_file_entry(name, chunk))
    totals = np.sum([f["label_counts"] for f in files], axis=0, dtype=np.int64)
    manifest = {
        **meta,
        "files": files,
        "label_counts": [int(x) for x in totals],
        "source": source,
    }
    (out_dir / C.MANIFEST_NAME).write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def _common_bar_ms(candles: dict[str, RawCandles]) -> int:
    """The one bar interval of all symbols (the lake records a single `bar_ms`)."""
    intervals: dict[str, int] = {}
    for symbol, c in candles.items():
        if len(c) < 2:
            raise DataError(f"symbol {symbol} ({c.source}) has {len(c)} bar; need many more")
        intervals[symbol] = infer_bar_ms(c.timestamp)
    if len(set(intervals.values())) > 1:
        listing = ", ".join(f"{s}: {ms / 60_000:g} min" for s, ms in intervals.items())
        raise DataError(
            f"symbols have different bar intervals ({listing}); prepare one interval at a "
            "time (separate --raw directories)"
        )
    return next(iter(intervals.values()))


def _check_file_names(symbols: list[str]) -> None:
    seen: dict[str, str] = {}
    for symbol in symbols:
        name = safe_symbol(symbol)
        if name in seen:
            raise DataError(
                f"symbols {seen[name]!r} and {symbol!r} map to the same file name {name}_*"
            )
        seen[name] = symbol


def format_distribution(counts: list[int]) -> str:
    """Label counts and shares, one class per line."""
    total = max(sum(counts), 1)
    lines = [f"label distribution of {sum(counts):,} rows:"]
    for name, n in zip(C.CLASS_NAMES, counts, strict=True):
        lines.append(f"  {name:<10} {n:>12,}  {100.0 * n / total:6.2f}%")
    return "\n".join(lines)


def prepare_lake(
    raw_dir: Path,
    out_dir: Path,
    *,
    label: LabelConfig | None = None,
    row_group_rows: int | None = None,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Build the processed lake in `out_dir` from the raw candles in `raw_dir`.

    Returns the manifest. Raises `DataError` / `UserError` for bad input (nothing is
    written then).
    """
    raw_dir, out_dir = Path(raw_dir), Path(out_dir)
    log = log or logging.getLogger(__name__).info
    label = label or LabelConfig()
    if row_group_rows is None:
        row_group_rows = DataConfig().row_group_rows
    if row_group_rows < 1:
        raise UserError(f"--row-group-rows must be >= 1, got {row_group_rows}")
    _check_out_dir(out_dir, raw_dir)
    writable_dir(out_dir.parent, "--data-dir")  # the lake is staged beside it

    candles, empty = read_raw_dir(raw_dir)
    for path in empty:
        log(f"warning: {path} holds no rows; skipped")
    _check_file_names(list(candles))
    bar_ms = _common_bar_ms(candles)
    try:
        horizon = horizon_bars(label.horizon_minutes, bar_ms)
    except ValueError as err:
        raise DataError(f"{raw_dir}: {err}; change --horizon-minutes") from None

    def tables() -> Iterator[tuple[str, pa.Table]]:
        for symbol, c in candles.items():
            table = build_symbol_table(c, horizon=horizon, label=label)
            if table.num_rows == 0:
                raise DataError(
                    f"symbol {symbol} ({c.source}) has {len(c)} bars; the feature warm-up "
                    f"({WARMUP_BARS}) plus the label horizon ({horizon}) need at least "
                    f"{WARMUP_BARS + horizon + 1}; add data or drop the symbol"
                )
            yield symbol, table

    with staging_dir(out_dir) as stage:
        manifest = write_lake(
            tables(),
            stage,
            meta=lake_metadata(bar_ms, label),
            row_group_rows=row_group_rows,
            source=str(raw_dir),
        )
        replace_dir(stage, out_dir)

    bars = sum(len(c) for c in candles.values())
    log(
        f"prepared {bars:,} bars of {len(candles)} symbol(s) from {raw_dir} "
        f"(bar {bar_ms / 60_000:g} min, label horizon {horizon} bars)"
    )
    log(format_distribution(manifest["label_counts"]))
    log(f"wrote {len(manifest['files'])} files and {C.MANIFEST_NAME} to {out_dir}")
    return manifest


# ---------------------------------------------------------------------------- CLI


_SECTIONS: dict[str, tuple[str, ...] | None] = {
    "paths": ("raw_dir", "data_dir"),
    "label": None,
    "data": ("row_group_rows",),
}


def main(argv: list[str] | None = None, prog: str = "saimp prepare") -> int:
    parser = ArgumentParser(
        prog=prog,
        description="Build the processed Parquet lake (causal features + triple-barrier labels) "
        "from raw candles.",
    )
    flags = ConfigFlags(parser, _SECTIONS, Config())
    alias(parser, "--raw", "--raw-dir")
    alias(parser, "--out", "--data-dir")
    args = parser.parse_args(argv)
    cfg = flags.config(args)
    prepare_lake(
        cfg.paths.raw_dir,
        cfg.paths.data_dir,
        label=cfg.label,
        row_group_rows=cfg.data.row_group_rows,
    )
    return 0


if __name__ == "__main__":
    from src.cli import run_module

    run_module(__spec__.name)  # as the module, so its log lines are under `src`
