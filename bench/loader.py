"""Throughput and memory of the streaming loader on processed lakes of growing size.

    python -m bench.loader                 # 1x (500k bars) and 10x (5M bars), 0 and 1 worker
    python -m bench.loader --base-bars 100000 --sizes 1 4 --workers 0

Writes lakes in the processed contract directly (random float32 features, not
`prepare`) into a temporary directory, then streams one epoch of the training split
of each lake in a fresh subprocess, so every peak RSS is that run's own. Peak RSS is
sampled every 10 ms over the process and its DataLoader workers, and covers scanning,
fitting the normaliser and streaming. Windows/s counts the epoch only (with workers,
their start-up is part of it). The machine's other load shows in the numbers: run it
on an idle machine for figures to compare.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

N_FEATURES = 16
SEQ_LEN = 64
BAR_MS = 60_000
T0 = 1_704_067_200_000  # 2024-01-01T00:00Z
FILE_ROWS = 1 << 18  # ~half a year of minute bars per file
ROW_GROUP_ROWS = 8192
SYMBOLS = ("BTCUSDT", "ETHUSDT")


def write_lake(out: Path, n_bars: int, seed: int = 0) -> None:
    """`n_bars` bars over two symbols, one file per FILE_ROWS rows, in the lake contract."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from src.core import constants as C

    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    features = [f"f{i:02d}" for i in range(N_FEATURES)]
    meta = {"version": 1, "features": features, "bar_ms": BAR_MS, "label": {}}
    per_symbol = n_bars // len(SYMBOLS)
    for symbol in SYMBOLS:
        bar = 0
        for start in range(0, per_symbol, FILE_ROWS):
            n = min(FILE_ROWS, per_symbol - start)
            steps = np.ones(n, dtype=np.int64)
            steps[rng.integers(0, n, max(1, n // 50_000))] += 30  # a few half-hour gaps
            bars = bar + np.cumsum(steps)
            bar = int(bars[-1])
            ts = T0 + bars * BAR_MS
            cols: dict[str, Any] = {
                C.TIMESTAMP_COL: pa.array(ts, pa.timestamp("ms", tz="UTC")),
                C.SYMBOL_COL: pa.array([symbol] * n, pa.string()),
            }
            for name in features:
                cols[name] = pa.array(rng.standard_normal(n, dtype=np.float32))
            cols[C.LABEL_COL] = pa.array(rng.integers(0, 4, n, dtype=np.int8))
            cols[C.HORIZON_END_COL] = pa.array(ts + 120 * BAR_MS, pa.timestamp("ms", tz="UTC"))
            table = pa.table(cols).replace_schema_metadata(
                {C.PARQUET_META_KEY: json.dumps(meta).encode()}
            )
            month = time.strftime("%Y-%m", time.gmtime(ts[0] / 1000))
            pq.write_table(table, out / f"{symbol}_{month}.parquet", row_group_size=ROW_GROUP_ROWS)


class PeakRss:
    """Samples, in a thread, the RSS of this process and of its children (the DataLoader
    workers) and keeps the peaks. The total double-counts pages a forked worker still
    shares with its parent, the same way for every lake size."""

    def __init__(self, every_s: float = 0.01) -> None:
        import psutil

        self._proc = psutil.Process()
        self._every = every_s
        self.peak_main = 0
        self.peak_total = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def sample(self) -> int:
        main = self._proc.memory_info().rss
        total = main
        for child in self._proc.children(recursive=True):
            with contextlib.suppress(Exception):  # a worker that just exited
                total += child.memory_info().rss
        self.peak_main = max(self.peak_main, main)
        self.peak_total = max(self.peak_total, total)
        return total

    def _run(self) -> None:
        while not self._stop.wait(self._every):
            self.sample()

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.sample()


def measure(lake: Path, workers: int, batch_size: int) -> dict[str, Any]:
    """One epoch of the training split; runs in its own process."""
    import torch

    from src.data.dataloader import StreamingWindowDataset, make_loader
    from src.data.lake import scan_lake
    from src.data.normalize import fit_normalizer
    from src.data.split import split_bounds

    torch.set_num_threads(1)
    with PeakRss() as rss:
        base = rss.sample()
        t = time.perf_counter()
        index = scan_lake(
            lake,
            seq_len=SEQ_LEN,
            max_gap_bars=1.5,
            bounds=lambda lo, hi: split_bounds(lo, hi, val_fraction=0.15, test_fraction=0.15),
        )
        scan_s = time.perf_counter() - t
        t = time.perf_counter()
        normalizer = fit_normalizer(index)
        fit_s = time.perf_counter() - t
        ds = StreamingWindowDataset(
            index, "train", batch_size=batch_size, normalizer=normalizer, shuffle=True, seed=0
        )
        loader = make_loader(ds, num_workers=workers, prefetch_factor=2)
        windows = 0
        t = time.perf_counter()
        for x, _ in loader:
            windows += len(x)
        epoch_s = time.perf_counter() - t
    assert windows == ds.windows_per_rank
    return {
        "rows": index.n_rows,
        "windows": windows,
        "windows_per_s": windows / epoch_s,
        "epoch_s": epoch_s,
        "scan_s": scan_s,
        "fit_s": fit_s,
        "base_rss_mb": base / 2**20,
        "peak_main_mb": rss.peak_main / 2**20,
        "peak_rss_mb": rss.peak_total / 2**20,
    }


def run_child(lake: Path, workers: int, batch_size: int) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "bench.loader", "--measure", str(lake)]
    cmd += ["--workers", str(workers), "--batch-size", str(batch_size)]
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=root)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--base-bars", type=int, default=500_000, help="bars of the 1x lake")
    p.add_argument("--sizes", type=int, nargs="+", default=[1, 10], help="multiples of base")
    p.add_argument("--workers", type=int, nargs="+", default=[0, 1])
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--measure", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.measure:
        print(json.dumps(measure(args.measure, args.workers[0], args.batch_size)))
        return 0

    rows = []
    with tempfile.TemporaryDirectory(prefix="saimp_bench_") as tmp:
        for size in args.sizes:
            lake = Path(tmp) / f"x{size}"
            t = time.perf_counter()
            write_lake(lake, size * args.base_bars)
            print(
                f"wrote {size}x lake ({size * args.base_bars:,} bars) in "
                f"{time.perf_counter() - t:.1f}s",
                file=sys.stderr,
            )
            for workers in args.workers:
                rows.append((size, workers, run_child(lake, workers, args.batch_size)))
    print(
        f"\nseq_len {SEQ_LEN}, {N_FEATURES} features, batch {args.batch_size}, "
        f"row groups {ROW_GROUP_ROWS}, units in flight 4, train split (70%)\n"
    )
    header = (
        "| size | bars | workers | train windows | windows/s | epoch s | scan s | fit s "
        "| base RSS MB | peak RSS MB, main | peak RSS MB, main + workers |"
    )
    print(header)
    print("|---" * (header.count("|") - 1) + "|")
    for size, workers, r in rows:
        print(
            f"| {size}x | {r['rows']:,} | {workers} | {r['windows']:,} | "
            f"{r['windows_per_s']:,.0f} | {r['epoch_s']:.2f} | {r['scan_s']:.2f} | "
            f"{r['fit_s']:.2f} | {r['base_rss_mb']:.0f} | {r['peak_main_mb']:.0f} | "
            f"{r['peak_rss_mb']:.0f} |"
        )
    for workers in args.workers:
        peaks = {s: r["peak_rss_mb"] for s, w, r in rows if w == workers}
        if len(peaks) > 1:
            lo, hi = min(peaks), max(peaks)
            print(
                f"workers={workers}: peak RSS (main + workers) {hi}x / {lo}x = "
                f"{peaks[hi] / peaks[lo]:.3f}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
