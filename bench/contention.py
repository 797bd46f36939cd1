"""Sharing a machine: one training epoch alone, beside a busy process, and two at once.

    python -m bench.contention                  # 3 rounds, about 6 minutes on 2 cores
    python -m bench.contention --rounds 1 --bars 30000

Each scenario runs `python -m src.modelling.train` (one epoch of the default model on a
synthetic lake prepared once, fp32, plain lines) as a separate process and reads the
epoch's training time from its `[EPOCH] Epoch 1 done in X s` line:

- alone: one training on an otherwise idle machine;
- busy: one training beside a process that keeps one core busy (a Python loop);
- pair: two trainings started together; each one's epoch time, and the wall time until
  both have finished, against running them one after the other (2 x alone).

Two policies, side by side in every round:

- ours: the project's thread budget (CPUs / processes sharing them), with the
  `ThreadGovernor` shrinking the threads to the CPUs other processes leave free;
- torch defaults: the same command with `--threads` set to torch's own default count,
  which fixes the count (no governor), as torch alone would run.

Neither policy sees `OMP_NUM_THREADS` or `OMP_WAIT_POLICY` from the calling shell. The
machine's other load shows in the numbers: check `uptime` first.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
EPOCH_LINE = re.compile(r"\[EPOCH\] Epoch 1 done in ([0-9.]+)s")
TRAIN = [sys.executable, "-m", "src.modelling.train"]


def torch_default_threads() -> int:
    """What torch picks in a fresh process with no OMP_NUM_THREADS."""
    code = "import torch; print(torch.get_num_threads())"
    out = subprocess.run([sys.executable, "-c", code], env=clean_env(), capture_output=True)
    return int(out.stdout)


POLICIES: dict[str, int | None] = {"ours": None, "torch defaults": 0}
"""Policy -> the fixed `--threads` (None: the project's budget and governor)."""


def clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY")}
    env["PYTHONPATH"] = str(REPO)
    return env


def prepare(root: Path, bars: int) -> Path:
    raw, lake = root / "raw", root / "lake"
    for args in (
        ["src.data.synthetic", "--raw-dir", str(raw), "--synthetic-bars", str(bars)],
        ["src.data.prepare", "--raw-dir", str(raw), "--data-dir", str(lake)],
    ):
        subprocess.run(
            [sys.executable, "-m", *args], cwd=REPO, env=clean_env(), check=True,
            capture_output=True,
        )  # fmt: skip
    return lake


def start(policy: str, lake: Path, out: Path) -> subprocess.Popen:
    fixed = ["--threads", str(POLICIES[policy])] if POLICIES[policy] else []
    args = [
        "--data-dir", str(lake), "--checkpoint", str(out / "best.pth"),
        "--logs-dir", str(out / "logs"), "--runs-dir", str(out / "runs"),
        "--epochs", "1", "--precision", "fp32", "--progress", "lines",
        "--log-every", "100000", "--checkpoint-every-windows", "none",
    ]  # fmt: skip
    return subprocess.Popen(
        [*TRAIN, *args, *fixed], cwd=REPO, env=clean_env(), text=True,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip


def epoch_seconds(proc: subprocess.Popen) -> float:
    out, _ = proc.communicate(timeout=900)
    found = EPOCH_LINE.search(out or "")
    if proc.returncode != 0 or not found:
        raise RuntimeError(f"training failed ({proc.returncode}):\n{out[-2000:]}")
    return float(found.group(1))


def run_round(policy: str, lake: Path, tmp: Path) -> dict[str, float]:
    n = len(list(tmp.iterdir()))
    t0 = time.perf_counter()
    alone = epoch_seconds(start(policy, lake, tmp / f"a{n}"))
    alone_wall = time.perf_counter() - t0
    busy_proc = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        busy = epoch_seconds(start(policy, lake, tmp / f"b{n}"))
    finally:
        busy_proc.kill()
        busy_proc.wait()
    t0 = time.perf_counter()
    pair = [start(policy, lake, tmp / f"p{n}_{i}") for i in range(2)]
    each = [epoch_seconds(p) for p in pair]
    wall = time.perf_counter() - t0
    return {
        "alone": alone,
        "alone_wall": alone_wall,
        "busy": busy,
        "pair_each": max(each),
        "pair_wall": wall,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m bench.contention", description=__doc__.split("\n")[0]
    )
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--bars", type=int, default=60_000, help="synthetic 1-minute bars")
    args = p.parse_args(argv)
    POLICIES["torch defaults"] = torch_default_threads()
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        lake = prepare(tmp / "data", args.bars)
        runs = tmp / "runs"
        runs.mkdir()
        results: dict[str, list[dict[str, float]]] = {name: [] for name in POLICIES}
        for r in range(args.rounds):
            for name in POLICIES:  # side by side within each round
                results[name].append(run_round(name, lake, runs))
                print(f"round {r + 1}, {name}: {results[name][-1]}", flush=True)

    def med(name: str, key: str) -> float:
        return statistics.median(x[key] for x in results[name])

    print(
        f"\nOne epoch's training time (s; the slower of a pair), and whole-process wall "
        f"times (s), medians of {args.rounds} rounds; {args.bars:,} bars"
    )
    print("| policy | alone | beside a busy process | two at once | alone, wall "
          "| two at once, wall | pair wall / (2 x alone wall) |")  # fmt: skip
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name in POLICIES:
        ratio = med(name, "pair_wall") / (2 * med(name, "alone_wall"))
        print(
            f"| {name} | {med(name, 'alone'):.1f} | {med(name, 'busy'):.1f} | "
            f"{med(name, 'pair_each'):.1f} | {med(name, 'alone_wall'):.1f} | "
            f"{med(name, 'pair_wall'):.1f} | {ratio:.2f} |"
        )
    alone_ratio = med("torch defaults", "alone") / med("ours", "alone")
    print(f"\nalone, ours vs torch defaults: {alone_ratio:.2f} x the speed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
