"""Turn raw candles into the processed Parquet lake the streaming loader reads.

    saimp prepare --raw-dir data/raw/synthetic --data-dir data/processed
        [--horizon-minutes 120] [--barriers fixed|volatility] [--upper1-pct 0.8] ...
        [--on-bad-rows error|drop] [--strict] [--workers N] [--row-group-rows 8192]

For each symbol (`prepare_symbol`): read and check its raw files (`raw_io`), join them
in time order, compute causal features (`features`) and triple-barrier labels on a
time-true horizon (`labels`) over the symbol's whole history (so labels near a month's
end look into the next month), keep the rows that have both, and write one file per
calendar month (UTC). Symbols run in worker processes (`--workers`), each holding one
symbol at a time; the lake is byte-identical whatever the number of workers.

Then the label mix is checked (`label_mix`): a class under 0.5% or 100 rows, or one
class above 97%, gets a warning with barriers computed from the data (an error with
`--strict`). The lake's format is in `lake_format`.

The lake is built in a staging directory next to ``--data-dir`` and swapped in only
when complete, so a failed run leaves the previous lake untouched. ``--data-dir`` must
be new, empty, or a lake written by this command; anything else is refused rather than
deleted.
"""

from __future__ import annotations

import contextlib
import json
import logging
import multiprocessing
import os
import secrets
import shutil
import tempfile
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from src.config import Config, DataConfig, LabelConfig
from src.core import constants as C
from src.core.errors import ArgumentParser, DataError, UserError
from src.core.paths import writable_dir
from src.data.label_mix import mix_problems, suggest_barriers
from src.data.lake_format import (
    LAKE_FILE,
    QUARANTINE_NAME,
    lake_metadata,
    safe_symbol,
)
from src.data.prepare_symbol import SymbolJob, SymbolResult, prepare_symbol
from src.data.raw_io import BAD_ROW_POLICIES, list_raw_files, symbols_in_file
from src.flags import ConfigFlags, alias

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
        if not (
            p.is_file()
            and (p.name in (C.MANIFEST_NAME, QUARANTINE_NAME) or LAKE_FILE.match(p.name))
        )
    ]
    if foreign or not (out_dir / C.MANIFEST_NAME).is_file():
        example = foreign[0] if foreign else f"no {C.MANIFEST_NAME}"
        raise UserError(
            f"--data-dir {out_dir} is not empty and not a lake written by prepare ({example}); "
            "choose a new or empty directory"
        )


# ------------------------------------------------------------------------ the work


def available_cpus() -> int:
    """CPUs this process may run on (its affinity mask, not the machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def files_by_symbol(paths: list[Path]) -> tuple[dict[str, list[Path]], list[Path]]:
    """symbol -> its files (sorted by symbol, files by name), and the files with no rows."""
    by_symbol: dict[str, list[Path]] = {}
    empty: list[Path] = []
    for path in paths:
        symbols = symbols_in_file(path)
        if not symbols:
            empty.append(path)
        for symbol in symbols:
            by_symbol.setdefault(symbol, []).append(path)
    return {s: by_symbol[s] for s in sorted(by_symbol)}, empty


def _check_file_names(symbols: list[str]) -> None:
    seen: dict[str, str] = {}
    for symbol in symbols:
        name = safe_symbol(symbol)
        if name in seen:
            raise DataError(
                f"symbols {seen[name]!r} and {symbol!r} map to the same file name {name}_*"
            )
        seen[name] = symbol


def run_jobs(jobs: list[SymbolJob], workers: int) -> Iterator[SymbolResult]:
    """`prepare_symbol` of every job, results in job order; `workers` > 1 runs them in
    that many processes. A failed job raises when its turn comes, so the first error
    in symbol order is the one reported, whatever the timing."""
    if workers <= 1 or len(jobs) <= 1:
        yield from map(prepare_symbol, jobs)
        return
    # spawn, not fork: a forked child inherits Arrow's and torch's thread pools mid-use.
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        try:
            yield from pool.map(prepare_symbol, jobs)
        except BaseException:
            pool.shutdown(wait=True, cancel_futures=True)
            raise


def _check_bar_ms(results: list[SymbolResult], latest: SymbolResult) -> None:
    """The lake records one bar interval: every symbol must share the first one's."""
    first = results[0]
    if latest.bar_ms != first.bar_ms:
        raise DataError(
            f"symbols have different bar intervals ({first.symbol}: "
            f"{first.bar_ms / 60_000:g} min, {latest.symbol}: {latest.bar_ms / 60_000:g} min); "
            "prepare one interval at a time (separate --raw-dir directories)"
        )


def build_manifest(
    results: list[SymbolResult], meta: dict[str, Any], *, source: str, on_bad_rows: str
) -> dict[str, Any]:
    """The manifest: the lake metadata, every file, the label counts, and what was left
    out of the raw data, per symbol and in total."""
    files = [entry for r in results for entry in r.files]
    totals = np.sum([f["label_counts"] for f in files], axis=0, dtype=np.int64)
    dropped = sum(r.bad_rows.num_rows for r in results)
    reasons: dict[str, int] = {}
    for r in results:
        for reason in r.bad_rows.column("reason").to_pylist():
            reasons[reason] = reasons.get(reason, 0) + 1
    return {
        **meta,
        "files": files,
        "label_counts": [int(x) for x in totals],
        "source": source,
        "symbols": {
            r.symbol: {
                "bars": r.bars,
                "rows": sum(f["rows"] for f in r.files),
                "bad_rows_dropped": r.bad_rows.num_rows,
                "duplicates_collapsed": r.duplicates,
            }
            for r in results
        },
        "bad_rows": {
            "policy": on_bad_rows,
            "dropped": dropped,
            "by_reason": dict(sorted(reasons.items())),
            "file": QUARANTINE_NAME if dropped else None,
        },
        "duplicates_collapsed": sum(r.duplicates for r in results),
    }


def format_distribution(counts: list[int]) -> str:
    """Label counts and shares, one class per line."""
    total = max(sum(counts), 1)
    lines = [f"label distribution of {sum(counts):,} rows:"]
    for name, n in zip(C.CLASS_NAMES, counts, strict=True):
        lines.append(f"  {name:<10} {n:>12,}  {100.0 * n / total:6.2f}%")
    return "\n".join(lines)


def mix_warning(label: LabelConfig, counts: list[int], results: list[SymbolResult]) -> str | None:
    """One line saying why the label mix cannot be learnt and what to set, or None."""
    problems = mix_problems(counts)
    if not problems:
        return None
    up = np.sum([r.up_hist for r in results], axis=0)
    down = np.sum([r.down_hist for r in results], axis=0)
    hint = suggest_barriers(label, up, down)
    settings = ", ".join(f"{k} {v}" for k, v in label.to_meta().items())
    text = f"the label mix cannot be learnt: {'; '.join(problems)} (labels: {settings})"
    return f"{text}; try {hint}" if hint else text


def prepare_lake(
    raw_dir: Path,
    out_dir: Path,
    *,
    label: LabelConfig | None = None,
    row_group_rows: int | None = None,
    on_bad_rows: str = "error",
    strict: bool = False,
    workers: int | None = None,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Build the processed lake in `out_dir` from the raw candles in `raw_dir`.

    `on_bad_rows`: "error" refuses the data at its first bad row; "drop" leaves bad rows
    out and records them in `_quarantine.parquet`. `strict`: an unlearnable label mix is
    an error instead of a warning. `workers`: processes (None: the CPUs available).
    Returns the manifest. Raises `DataError` / `UserError` for bad input (the previous
    lake, if any, is left as it was).
    """
    raw_dir, out_dir = Path(raw_dir), Path(out_dir)
    logger = logging.getLogger(__name__)
    log = log or logger.info
    label = label or LabelConfig()
    if row_group_rows is None:
        row_group_rows = DataConfig().row_group_rows
    if row_group_rows < 1:
        raise UserError(f"--row-group-rows must be >= 1, got {row_group_rows}")
    if on_bad_rows not in BAD_ROW_POLICIES:
        raise UserError(f"--on-bad-rows must be one of {', '.join(BAD_ROW_POLICIES)}")
    if workers is not None and workers < 1:
        raise UserError(f"--workers must be >= 1, got {workers}")
    _check_out_dir(out_dir, raw_dir)
    writable_dir(out_dir.parent, "--data-dir")  # the lake is staged beside it

    by_symbol, empty = files_by_symbol(list_raw_files(raw_dir))
    for path in empty:
        logger.warning(f"{path} holds no rows; skipped")
    if not by_symbol:
        raise DataError(f"the raw files in {raw_dir} hold no candles")
    _check_file_names(list(by_symbol))
    workers = min(workers or available_cpus(), len(by_symbol))

    with staging_dir(out_dir) as stage:
        jobs = [
            SymbolJob(symbol, paths, stage, label, row_group_rows, on_bad_rows)
            for symbol, paths in by_symbol.items()
        ]
        results: list[SymbolResult] = []
        for result in run_jobs(jobs, workers):
            results.append(result)
            _check_bar_ms(results, result)
        bar_ms = results[0].bar_ms
        meta = lake_metadata(bar_ms, label)
        manifest = build_manifest(results, meta, source=str(raw_dir), on_bad_rows=on_bad_rows)
        warning = mix_warning(label, manifest["label_counts"], results)
        if warning and strict:
            raise DataError(f"{raw_dir}: {warning} (--strict)")
        if manifest["bad_rows"]["dropped"]:
            quarantine = pa.concat_tables([r.bad_rows for r in results])
            pq.write_table(quarantine, stage / QUARANTINE_NAME)
        (stage / C.MANIFEST_NAME).write_text(json.dumps(manifest, indent=2) + "\n")
        replace_dir(stage, out_dir)

    bars = sum(r.bars for r in results)
    log(
        f"prepared {bars:,} bars of {len(results)} symbol(s) from {raw_dir} with "
        f"{workers} worker(s) (bar {bar_ms / 60_000:g} min, label horizon "
        f"{label.horizon_minutes} min, {label.barriers} barriers)"
    )
    if manifest["duplicates_collapsed"]:
        log(f"collapsed {manifest['duplicates_collapsed']:,} identical duplicate rows")
    if manifest["bad_rows"]["dropped"]:
        reasons = ", ".join(f"{n:,} {r}" for r, n in manifest["bad_rows"]["by_reason"].items())
        logger.warning(
            f"left out {manifest['bad_rows']['dropped']:,} bad rows ({reasons}); "
            f"they are listed in {out_dir / QUARANTINE_NAME}"
        )
    log(format_distribution(manifest["label_counts"]))
    if warning:
        logger.warning(warning)
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
    parser.add_argument(
        "--on-bad-rows",
        choices=BAD_ROW_POLICIES,
        default="error",
        help="error: refuse the data at its first row that breaks the contract (default); "
        f"drop: leave such rows out and list them in {QUARANTINE_NAME} in the lake",
    )
    parser.add_argument(
        "--strict",
        action="store_true",
        help="make a label mix that cannot be learnt an error instead of a warning",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=None,
        help="processes that prepare symbols in parallel (default: the CPUs available)",
    )
    args = parser.parse_args(argv)
    cfg = flags.config(args)
    prepare_lake(
        cfg.paths.raw_dir,
        cfg.paths.data_dir,
        label=cfg.label,
        row_group_rows=cfg.data.row_group_rows,
        on_bad_rows=args.on_bad_rows,
        strict=args.strict,
        workers=args.workers,
    )
    return 0


if __name__ == "__main__":
    from src.cli import run_module

    run_module(__spec__.name)  # as the module, so its log lines are under `src`
