"""Speed and memory of `saimp prepare` (raw candles -> processed lake) by symbols and workers.

    python -m bench.prepare          # 1, 8, 32 symbols x 250k bars, 1 and 2 workers, 3 rounds
    python -m bench.prepare --symbols 1,2 --bars 20000 --rounds 1 --quiet-wait 0   # seconds

Raw candles are generated once per symbol count (`python -m src.data.synthetic
--symbols N --synthetic-bars BARS`: BARS one-minute bars per symbol, one Parquet file
per symbol and month) into a work directory (a new temporary one unless `--work-dir`;
removed at the end unless `--keep`; raw data already complete in a kept `--work-dir`
is reused). Every timed run is a fresh process,

    python -m src.data.prepare --raw-dir RAW --data-dir OUT --workers W

into a removed-before-each-run OUT, timed from start to exit (interpreter start-up
included). While it runs, a thread samples every `--poll-ms` ms the RSS of the
process and of all its descendants (the spawn workers and multiprocessing's resource
tracker) and keeps the peak of their sum ("tree") and the peak of the largest single
process; it also reads each process's kernel high-water mark (`VmHWM`), so the largest
process's peak is exact (and the tree's is never below it), and the sum of the
high-water marks bounds the tree's peak from above. `wait4`'s `ru_maxrss` (the largest
process, reaped workers included) is printed as a check; the CPU time of the whole tree
comes from the same call.

Within a round every symbol count runs with every worker count, one after the other
(the worker order alternates between rounds), so the worker counts compare under the
same machine conditions; the tables show medians over rounds, and the worker speed-up
is the median of the per-round ratios. Before each such group the script waits (up to
`--quiet-wait` s) for the rest of the machine to use under `--max-other` cores, and a
group during which it used more is run again (up to `--retries` times; the quietest
try is kept). Every lake is compared byte for byte (every file, manifest included) with
the first one written for its symbol count.

Targets (printed as met / missed, never a failure): peak tree RSS at the largest symbol
count at most 1.3 times that at the smallest, per worker count; 2 workers at least 1.7
times the bars/s of 1 worker at every symbol count of 2 or more (prepare runs at most
one worker per symbol, so at 1 symbol both are one process).

The raw files sit in the page cache for every run (they were just written). The
machine's other load shows in the numbers: the second table gives the CPU the rest of
the machine used during the runs; check `uptime` first.
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[1]
MB = 2**20
RSS_TARGET = 1.3
SPEEDUP_TARGET = 1.7
WORKERS_LINE = re.compile(r"with (\d+) worker\(s\)")


def env() -> dict[str, str]:
    out = dict(os.environ)
    out["PYTHONPATH"] = str(REPO)
    return out


def int_list(text: str) -> list[int]:
    values = [int(x) for x in text.split(",") if x.strip()]
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers separated by commas: {text}")
    return values


# ----------------------------------------------------------------------- raw data


def raw_data(work: Path, symbols: int, bars: int) -> Path:
    """The raw candles of `symbols` symbols x `bars` bars, generated unless complete."""
    raw = work / "raw" / f"s{symbols}_b{bars}"
    done = raw / ".complete"
    if done.is_file():
        print(f"reusing raw data for {symbols} symbol(s) in {raw}", file=sys.stderr)
        return raw
    shutil.rmtree(raw, ignore_errors=True)
    t = time.perf_counter()
    cmd = [sys.executable, "-m", "src.data.synthetic", "--raw-dir", str(raw)]
    cmd += ["--symbols", str(symbols), "--synthetic-bars", str(bars)]
    out = subprocess.run(cmd, cwd=REPO, env=env(), capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"synthetic data failed ({out.returncode}):\n{out.stderr[-3000:]}")
    done.write_text("")
    size = sum(p.stat().st_size for p in raw.glob("*.parquet"))
    print(
        f"generated {symbols} symbol(s) x {bars:,} bars ({len(list(raw.glob('*.parquet')))} "
        f"files, {size / MB:,.0f} MB) in {time.perf_counter() - t:.1f} s",
        file=sys.stderr,
    )
    return raw


# ------------------------------------------------------------------ one timed run


class TreeSampler:
    """Polls, in a thread, the RSS of a process and of all its descendants."""

    def __init__(self, pid: int, every_s: float) -> None:
        self.proc = psutil.Process(pid)
        self.every = every_s
        self.peak_tree = 0
        self.peak_largest = 0
        self.peak_parent = 0
        self.peak_child = 0
        self.hwm: dict[int, int] = {}
        """pid -> the kernel's high-water RSS (VmHWM) last read for it."""
        self.max_procs = 0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def sample(self) -> None:
        try:
            parent = self.proc.memory_info().rss
            children = self.proc.children(recursive=True)
        except psutil.Error:  # exited (or a zombie awaiting wait4)
            return
        self._read_hwm(self.proc.pid)
        rss = []
        for child in children:
            try:
                rss.append(child.memory_info().rss)
            except psutil.Error:  # a worker that just exited
                continue
            self._read_hwm(child.pid)
        self.samples += 1
        self.peak_parent = max(self.peak_parent, parent)
        self.peak_child = max(self.peak_child, *rss, 0)
        self.peak_tree = max(self.peak_tree, parent + sum(rss))
        self.peak_largest = max(self.peak_largest, parent, *rss)
        self.max_procs = max(self.max_procs, 1 + len(rss))

    def _read_hwm(self, pid: int) -> None:
        try:
            with open(f"/proc/{pid}/status", "rb") as f:
                for line in f:
                    if line.startswith(b"VmHWM:"):
                        kib = int(line.split()[1])
                        self.hwm[pid] = max(self.hwm.get(pid, 0), kib * 1024)
                        return
        except (OSError, ValueError):  # gone, or not Linux
            pass

    @property
    def largest_hwm(self) -> int:
        return max(self.hwm.values(), default=0)

    def _run(self) -> None:
        while True:
            self.sample()
            if self._stop.wait(self.every):
                return

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


@dataclass
class Run:
    seconds: float
    peak_tree: int
    """The largest sampled sum over the tree (or the largest process's high-water mark,
    when higher: the sum is never below it)."""
    peak_largest: int
    """The largest process's high-water RSS (VmHWM; sampled RSS where higher)."""
    peak_parent: int
    peak_child: int
    hwm_sum: int
    """Sum of every process's high-water RSS: an upper bound of the tree's peak."""
    kernel_largest: int
    """ru_maxrss of the process and its reaped descendants (the largest one's peak)."""
    cpu_s: float
    other_cores: float
    """Cores the rest of the machine kept busy during the run (besides prepare and this
    script)."""
    max_procs: int
    workers_used: int
    samples: int


def busy_seconds() -> float:
    t = psutil.cpu_times()
    return sum(t) - t.idle - getattr(t, "iowait", 0.0)


def run_prepare(raw: Path, out: Path, workers: int, poll_s: float) -> Run:
    shutil.rmtree(out, ignore_errors=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    log = out.parent / "prepare.log"
    cmd = [sys.executable, "-m", "src.data.prepare", "--raw-dir", str(raw)]
    cmd += ["--data-dir", str(out), "--workers", str(workers)]
    busy0, self0 = busy_seconds(), resource.getrusage(resource.RUSAGE_SELF)
    with open(log, "w") as sink:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=REPO, env=env(), stdout=sink, stderr=subprocess.STDOUT)
        sampler = TreeSampler(proc.pid, poll_s)
        sampler.start()
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        sampler.stop()
    self1 = resource.getrusage(resource.RUSAGE_SELF)
    busy = busy_seconds() - busy0
    mine = (self1.ru_utime - self0.ru_utime) + (self1.ru_stime - self0.ru_stime)
    text = log.read_text()
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{text[-3000:]}")
    used = WORKERS_LINE.search(text)
    cpu = usage.ru_utime + usage.ru_stime
    return Run(
        seconds=seconds,
        peak_tree=max(sampler.peak_tree, sampler.largest_hwm),
        peak_largest=max(sampler.peak_largest, sampler.largest_hwm),
        hwm_sum=sum(sampler.hwm.values()),
        peak_parent=max(sampler.peak_parent, sampler.hwm.get(proc.pid, 0)),
        peak_child=max(
            sampler.peak_child, *(v for k, v in sampler.hwm.items() if k != proc.pid), 0
        ),
        kernel_largest=usage.ru_maxrss * 1024,  # KiB on Linux
        cpu_s=cpu,
        other_cores=max(0.0, busy - cpu - mine) / seconds,
        max_procs=sampler.max_procs,
        workers_used=int(used.group(1)) if used else -1,
        samples=sampler.samples,
    )


def wait_for_quiet(budget_s: float, max_cores: float) -> float:
    """Wait (at most `budget_s`) until the machine's other work uses under `max_cores`
    over a second; returns the cores it used in the last second looked at."""
    deadline = time.monotonic() + budget_s
    while True:
        busy0, t0 = busy_seconds(), time.monotonic()
        time.sleep(1.0)
        cores = (busy_seconds() - busy0) / (time.monotonic() - t0)
        if cores < max_cores or time.monotonic() >= deadline:
            return cores


# -------------------------------------------------------------- byte comparison


def lake_differences(a: Path, b: Path) -> list[str]:
    """Names of the files that differ between two lakes (or exist in one only)."""
    names_a = {p.name for p in a.iterdir()}
    names_b = {p.name for p in b.iterdir()}
    diff = sorted(names_a ^ names_b)
    for name in sorted(names_a & names_b):
        fa, fb = a / name, b / name
        if fa.stat().st_size != fb.stat().st_size:
            diff.append(name)
            continue
        with open(fa, "rb") as x, open(fb, "rb") as y:
            while True:
                ca, cb = x.read(1 << 20), y.read(1 << 20)
                if ca != cb:
                    diff.append(name)
                    break
                if not ca:
                    break
    return diff


@dataclass
class Identity:
    reference: str = ""
    compared: int = 0
    differing: dict[str, list[str]] = field(default_factory=dict)


def check_lake(ident: Identity, ref: Path, out: Path, what: str) -> None:
    """Keep the first lake as `ref`; compare every later one with it, then remove it."""
    if not ident.reference:
        os.rename(out, ref)
        ident.reference = what
        return
    diff = lake_differences(ref, out)
    ident.compared += 1
    if diff:
        ident.differing[what] = diff
    shutil.rmtree(out)


# ------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m bench.prepare",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--symbols", type=int_list, default=[1, 8, 32], help="symbol counts (1,8,32)")
    p.add_argument("--bars", type=int, default=250_000, help="one-minute bars per symbol")
    p.add_argument("--workers", type=int_list, default=[1, 2], help="worker counts (1,2)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--poll-ms", type=float, default=20.0, help="RSS sampling interval")
    p.add_argument(
        "--quiet-wait",
        type=float,
        default=60.0,
        help="before each group of runs, wait up to this many seconds for other work to "
        "use under --max-other cores (0: do not wait)",
    )
    p.add_argument(
        "--max-other",
        type=float,
        default=0.3,
        help="a group of runs (one symbol count, every worker count) during which other "
        "work used more cores than this is run again (0.3)",
    )
    p.add_argument(
        "--retries", type=int, default=3, help="reruns per group at most; the quietest is kept"
    )
    p.add_argument(
        "--work-dir", type=Path, help="where raw data and lakes go (default: a new temp dir)"
    )
    p.add_argument("--keep", action="store_true", help="keep the work directory")
    args = p.parse_args(argv)
    symbol_counts = sorted(set(args.symbols))
    worker_counts = sorted(set(args.workers))

    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}", file=sys.stderr)
    if args.work_dir:
        work = args.work_dir.resolve()
        work.mkdir(parents=True, exist_ok=True)
    else:
        work = Path(tempfile.mkdtemp(prefix="saimp_bench_prepare_"))
    runs: dict[tuple[int, int], list[Run]] = {}
    identity = {n: Identity() for n in symbol_counts}
    reruns = dict.fromkeys(symbol_counts, 0)
    t_start = time.perf_counter()
    try:
        raws = {n: raw_data(work, n, args.bars) for n in symbol_counts}
        lakes = work / "lakes"
        shutil.rmtree(lakes, ignore_errors=True)
        out = lakes / "run" / "lake"
        for r in range(args.rounds):
            order = worker_counts if r % 2 == 0 else worker_counts[::-1]
            for n in symbol_counts:
                tries: list[dict[int, Run]] = []
                for attempt in range(1 + args.retries):
                    if args.quiet_wait > 0:
                        cores = wait_for_quiet(args.quiet_wait, args.max_other)
                        print(
                            f"round {r + 1}, {n} symbol(s), try {attempt + 1}: other load "
                            f"{cores:.2f} cores before it",
                            file=sys.stderr,
                        )
                    group: dict[int, Run] = {}
                    for w in order:
                        group[w] = run = run_prepare(raws[n], out, w, args.poll_ms / 1000)
                        check_lake(
                            identity[n], lakes / f"ref_s{n}", out, f"workers {w}, round {r + 1}"
                        )
                        print(
                            f"round {r + 1}, {n} symbol(s), {w} worker(s): {run.seconds:.2f} s, "
                            f"tree {run.peak_tree / MB:.0f} MB, largest "
                            f"{run.peak_largest / MB:.0f} MB (parent {run.peak_parent / MB:.0f}, "
                            f"worker {run.peak_child / MB:.0f}, wait4 "
                            f"{run.kernel_largest / MB:.0f}), CPU {run.cpu_s:.1f} s, "
                            f"other load {run.other_cores:.2f} cores",
                            file=sys.stderr,
                            flush=True,
                        )
                    tries.append(group)
                    if max(x.other_cores for x in group.values()) <= args.max_other:
                        break
                    reruns[n] += attempt < args.retries
                kept = min(tries, key=lambda g: max(x.other_cores for x in g.values()))
                for w, run in kept.items():
                    runs.setdefault((n, w), []).append(run)
            shutil.rmtree(out, ignore_errors=True)
    finally:
        if args.keep:
            print(f"kept {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)
    total_s = time.perf_counter() - t_start

    def med(n: int, w: int, key: str) -> float:
        return statistics.median(getattr(x, key) for x in runs[(n, w)])

    w1 = worker_counts[0]
    n1 = symbol_counts[0]

    def speedup(n: int, w: int) -> list[float]:
        """Per-round bars/s of w workers over w1 workers (same round)."""
        return [a.seconds / b.seconds for a, b in zip(runs[(n, w1)], runs[(n, w)], strict=True)]

    print(
        f"\n`saimp prepare`, {args.bars:,} one-minute bars per symbol; medians of "
        f"{args.rounds} round(s); RSS sampled every {args.poll_ms:g} ms; "
        f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}; "
        f"{total_s / 60:.1f} min in all\n"
    )
    print(
        f"| symbols | workers | bars | median s | bars/s | peak RSS tree MB "
        f"| peak RSS largest process MB | ratio to {w1} worker (bars/s) "
        f"| RSS ratio to {n1} symbol |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for n in symbol_counts:
        for w in worker_counts:
            bars = n * args.bars
            secs = med(n, w, "seconds")
            ratio = statistics.median(speedup(n, w))
            rss_ratio = med(n, w, "peak_tree") / med(n1, w, "peak_tree")
            print(
                f"| {n} | {w} | {bars:,} | {secs:.2f} | {bars / secs:,.0f} | "
                f"{med(n, w, 'peak_tree') / MB:,.0f} | {med(n, w, 'peak_largest') / MB:,.0f} | "
                f"{ratio:.2f} | {rss_ratio:.2f} |"
            )

    print(
        "\nPer process and CPU (medians; 'workers used' as prepare reports it, at most one "
        "per symbol; processes seen include multiprocessing's resource tracker; 'wait4' is "
        "the largest process's ru_maxrss; the sum of every process's high-water RSS bounds "
        "the tree's peak from above, the sampled sum from below; CPU is the whole tree's "
        "user + system time; other load is what the rest of the machine used):\n"
    )
    print(
        "| symbols | workers | workers used | processes seen | peak RSS parent MB "
        "| peak RSS largest worker MB | largest process, wait4 MB | sum of high-water MB "
        "| CPU s | cores busy "
        "| s, min-max | other load, cores (max) |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|")
    for n in symbol_counts:
        for w in worker_counts:
            rs = runs[(n, w)]
            used = sorted({x.workers_used for x in rs})
            child = med(n, w, "peak_child") / MB
            print(
                f"| {n} | {w} | {'/'.join(map(str, used))} | "
                f"{max(x.max_procs for x in rs)} | {med(n, w, 'peak_parent') / MB:,.0f} | "
                f"{child:,.0f} | {med(n, w, 'kernel_largest') / MB:,.0f} | "
                f"{med(n, w, 'hwm_sum') / MB:,.0f} | "
                f"{med(n, w, 'cpu_s'):.1f} | {med(n, w, 'cpu_s') / med(n, w, 'seconds'):.2f} | "
                f"{min(x.seconds for x in rs):.2f}-{max(x.seconds for x in rs):.2f} | "
                f"{max(x.other_cores for x in rs):.2f} |"
            )

    print(
        f"\nGroups run again for other load over {args.max_other:g} cores (of at most "
        f"{args.retries} each; the quietest try is kept): "
        + ", ".join(f"{n} symbol(s): {reruns[n]}" for n in symbol_counts)
    )
    print("\nLakes byte for byte (every file, manifest included):\n")
    for n in symbol_counts:
        ident = identity[n]
        if ident.differing:
            what = "; ".join(
                f"{k}: {len(v)} file(s) differ ({', '.join(v[:3])}{', ...' if len(v) > 3 else ''})"
                for k, v in ident.differing.items()
            )
            print(f"- {n} symbol(s): DIFFER from the lake of {ident.reference}: {what}")
        else:
            print(
                f"- {n} symbol(s): identical ({ident.compared} lake(s) of workers "
                f"{','.join(map(str, worker_counts))} over {args.rounds} round(s) against the "
                f"lake of {ident.reference})"
            )

    print("\nTargets:\n")
    n_hi = symbol_counts[-1]
    if n_hi != n1:
        for w in worker_counts:
            ratio = med(n_hi, w, "peak_tree") / med(n1, w, "peak_tree")
            verdict = "met" if ratio <= RSS_TARGET else "MISSED"
            print(
                f"- {w} worker(s): peak RSS (tree) at {n_hi} symbols "
                f"{med(n_hi, w, 'peak_tree') / MB:,.0f} MB = {ratio:.2f} x that at {n1} symbol(s) "
                f"({med(n1, w, 'peak_tree') / MB:,.0f} MB) (<= {RSS_TARGET}): {verdict}"
            )
            n_w = next(n for n in symbol_counts if n >= min(w, n_hi))
            if n_w != n1 and n_w != n_hi:  # prepare runs min(w, symbols) processes
                ratio = med(n_hi, w, "peak_tree") / med(n_w, w, "peak_tree")
                print(
                    f"  (prepare runs one process below {w} symbols; against {n_w} symbols, "
                    f"the smallest count here that starts {w} workers: {ratio:.2f} x)"
                )
    if 1 in worker_counts and 2 in worker_counts:
        for n in symbol_counts:
            if n < 2:
                continue
            per_round = speedup(n, 2)  # worker_counts[0] is 1 here
            ratio = statistics.median(per_round)
            verdict = "met" if ratio >= SPEEDUP_TARGET else "MISSED"
            spread = f"{min(per_round):.2f}-{max(per_round):.2f}"
            print(
                f"- {n} symbols: 2 workers {ratio:.2f} x the bars/s of 1 worker "
                f"(per round {spread}) (>= {SPEEDUP_TARGET}): {verdict}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
