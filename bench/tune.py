"""What the search's pruner saves, and what `--jobs 2` buys, on a synthetic lake.

    python -m bench.tune                                 # about 7 minutes on 2 cores
    python -m bench.tune --parts jobs --jobs-trials 6 --jobs-epochs 3

Runs `saimp tune` (the built-in space, TPE with one sampler seed) as separate processes:

- pruning: the same study of `--trials` trials of `--epochs` epochs with the median
  pruner and without it (`--pruner none`); epochs trained (from each trial's reported
  epochs), wall time, and the best validation macro-F1 of each;
- jobs: `--jobs-trials` trials of `--jobs-epochs` epochs with `--jobs 1` and with
  `--jobs 2`, without pruning (so both do the same epochs); trials per hour.

The machine's other load shows in the numbers: check `uptime` first.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.contention import REPO, clean_env, prepare


def study(lake: Path, out: Path, trials: int, epochs: int, *extra: str) -> dict[str, float]:
    """Run one study to the end; its wall time, epochs trained and best value."""
    import optuna

    t0 = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "src.modelling.tune", "--data-dir", str(lake), "--out", str(out),
         "--trials", str(trials), "--epochs", str(epochs), "--progress", "lines",
         "--log-every", "100000", "--checkpoint-every-windows", "none", *extra],
        cwd=REPO, env=clean_env(), check=True, capture_output=True,
    )  # fmt: skip
    wall = time.perf_counter() - t0
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    s = optuna.load_study(study_name="saimp", storage=f"sqlite:///{out / 'study.db'}")
    done = [t for t in s.get_trials() if t.state.name in ("COMPLETE", "PRUNED")]
    return {
        "wall": wall,
        "epochs": sum(len(t.intermediate_values) for t in done),
        "pruned": sum(t.state.name == "PRUNED" for t in done),
        "best": s.best_value,
        "trials": len(done),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.tune", description=__doc__.split("\n")[0])
    p.add_argument("--bars", type=int, default=20_000, help="synthetic 1-minute bars")
    p.add_argument("--trials", type=int, default=12)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--jobs-trials", type=int, default=8)
    p.add_argument("--jobs-epochs", type=int, default=3)
    p.add_argument("--parts", nargs="+", choices=("pruning", "jobs"), default=["pruning", "jobs"])
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        lake = prepare(tmp / "data", args.bars)
        runs, jobs = {}, {}
        if "pruning" in args.parts:
            n, e = args.trials, args.epochs
            runs["median pruner"] = study(lake, tmp / "pruned", n, e)
            runs["no pruner"] = study(lake, tmp / "unpruned", n, e, "--pruner", "none")
        if "jobs" in args.parts:
            n, e = args.jobs_trials, args.jobs_epochs
            for j in (1, 2):
                jobs[j] = study(lake, tmp / f"jobs{j}", n, e, "--jobs", str(j), "--pruner", "none")
    if runs:
        print_pruning(args, runs)
    if jobs:
        print_jobs(args, jobs)
    return 0


def print_pruning(args: argparse.Namespace, runs: dict) -> None:
    print(f"\nPruning: {args.trials} trials of {args.epochs} epochs, {args.bars:,} bars")
    print("| study | epochs trained | pruned trials | wall s | best val macro-F1 |")
    print("|---|---:|---:|---:|---:|")
    for name, r in runs.items():
        print(f"| {name} | {r['epochs']} | {r['pruned']} | {r['wall']:.0f} | {r['best']:.4f} |")
    share = runs["median pruner"]["epochs"] / runs["no pruner"]["epochs"]
    print(f"epochs with the pruner / without: {share:.2f}")


def print_jobs(args: argparse.Namespace, jobs: dict) -> None:
    print(f"\nParallel trials: {args.jobs_trials} trials of {args.jobs_epochs} epochs")
    print("| jobs | wall s | trials per hour |")
    print("|---:|---:|---:|")
    for j, r in jobs.items():
        print(f"| {j} | {r['wall']:.0f} | {3600 * r['trials'] / r['wall']:.0f} |")
    print(f"--jobs 2 / --jobs 1 trials per hour: {jobs[1]['wall'] / jobs[2]['wall']:.2f}")


if __name__ == "__main__":
    sys.exit(main())
