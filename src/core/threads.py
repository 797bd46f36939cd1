"""The CPU thread budget of a process, so that jobs sharing a machine share it fairly.

torch starts one intra-op thread per core, and its OpenMP threads spin while they wait
for work. Two such processes on the same cores (two trainings, a training beside any
busy process, parallel tuning trials, torchrun ranks on one CPU machine) then burn their
time spinning against each other: on a 2-core machine one epoch went from 8.9 s alone to
31 s beside one busy process, and to 92 s each for two trainings at once.

The policy (chosen by measurement, `bench/contention.py`):
- threads = the CPUs this process may run on (its affinity mask) divided by the
  processes that share them (the local world size under torchrun, the parallel jobs of
  a search), at least 1; `OMP_NUM_THREADS`, when set, or an explicit `--threads` wins;
- OpenMP threads sleep instead of spinning while they wait (`OMP_WAIT_POLICY=PASSIVE`,
  unless the user set it). OpenMP reads that variable once, when torch is first
  imported, so `src/__init__.py` sets it: every entry point imports `src` before torch.
"""

from __future__ import annotations

import os

WAIT_POLICY = "PASSIVE"
"""The OpenMP wait policy `src/__init__.py` sets when the user has not chosen one."""


def available_cpus() -> int:
    """CPUs this process may run on (its affinity mask; the CPU count where there is none)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def thread_budget(requested: int | None = None, sharing: int = 1) -> tuple[int, str]:
    """Intra-op threads for this process, and where the number came from.

    `requested`: an explicit count (`--threads`). `sharing`: processes started together
    on the same CPUs (local world size, parallel jobs). Without either override the
    budget is `available_cpus() // sharing`, at least 1.
    """
    if requested is not None:
        if requested < 1:
            raise ValueError(f"train.threads must be >= 1, got {requested}")
        return requested, "--threads"
    env = os.environ.get("OMP_NUM_THREADS", "").strip()
    if env.isdigit() and int(env) > 0:
        return int(env), "OMP_NUM_THREADS"
    cpus = available_cpus()
    share = max(1, sharing)
    return max(1, cpus // share), f"{cpus} CPUs / {share} process(es)"


def apply_thread_budget(requested: int | None = None, sharing: int = 1) -> str:
    """Set torch's intra-op threads to the budget; return a line for the run's header."""
    import torch

    threads, source = thread_budget(requested, sharing)
    torch.set_num_threads(threads)
    policy = os.environ.get("OMP_WAIT_POLICY", "default")
    return f"{threads} CPU threads ({source}), OpenMP wait policy {policy}"
