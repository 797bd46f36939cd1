"""The CPU threads of a training process, so that jobs sharing a machine share it fairly.

torch starts one intra-op thread per core, and its OpenMP threads spin while they wait
for the next parallel region. Two such processes on the same cores (two trainings, a
training beside any busy process, parallel tuning trials, torchrun ranks on one CPU
machine) then spin against each other: on this project's 2-core machine one epoch on a
small lake took 3.1 s alone, 9.8 s beside one busy process, and 34 s and 376 s (two
rounds) for each of two trainings at once (`python -m bench.contention`, torch's
defaults).

The policy, chosen by measurement on that benchmark:
- a budget: the CPUs this process may run on (its affinity mask) divided by the
  processes started together on them (the local world size under torchrun, the parallel
  jobs of a search), at least 1; `OMP_NUM_THREADS`, when set, or `--threads` wins;
- `ThreadGovernor`: while training, every couple of seconds, the CPU time other
  processes used is measured, and the threads shrink to the CPUs left free (at least 1),
  growing back when the neighbour is gone. One thread has no teammates to spin for, so
  a neighbour costs a fair share instead of a collapse, while a process alone keeps
  torch's default speed (3.0 s alone, 4.3 s beside a busy process, 5.7 s each for two
  at once). Making OpenMP threads sleep instead (`OMP_WAIT_POLICY=PASSIVE`) avoided the
  collapse too but made a training alone 1.7 times slower (5.2 s); a short spin count
  (`GOMP_SPINCOUNT=1000`) cost about 20% alone, and 10,000 still took 27 s each for two
  at once.
"""

from __future__ import annotations

import os
import time


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


def apply_thread_budget(
    requested: int | None = None, sharing: int = 1
) -> tuple[str, ThreadGovernor | None]:
    """Set torch's intra-op threads to the budget; return a line for the run's header, and
    the governor that adapts them while training (None when the user fixed the count)."""
    import torch

    threads, source = thread_budget(requested, sharing)
    torch.set_num_threads(threads)
    if source in ("--threads", "OMP_NUM_THREADS") or threads <= 1:
        return f"{threads} CPU threads ({source})", None
    line = f"{threads} CPU threads ({source}), fewer while other processes use the CPUs"
    return line, ThreadGovernor(threads)


class ThreadGovernor:
    """Shrinks torch's threads to the CPUs other processes leave free, and grows them back.

    Call `tick()` often (after every window); every `interval_s` it compares the CPU time
    the whole machine used with this process's own (its live child processes, such as
    DataLoader workers, included) and sets `min(budget, cpus - others)` threads, at least
    1, where `others` is the other processes' load in cores, rounded.
    """

    def __init__(self, budget: int, interval_s: float = 2.0) -> None:
        import psutil

        self.budget, self.interval_s = budget, interval_s
        self.cpus = available_cpus()
        self.threads = budget
        self._me = psutil.Process()
        self._last = self._sample()

    def _sample(self) -> tuple[float, float, float]:
        import psutil

        t = psutil.cpu_times()
        busy = sum(t) - t.idle - getattr(t, "iowait", 0.0)
        mine = 0.0
        for proc in (self._me, *self._me.children(recursive=True)):
            try:
                c = proc.cpu_times()
                mine += c.user + c.system
            except psutil.Error:  # a child that just ended
                continue
        return time.monotonic(), busy, mine

    def tick(self) -> int:
        """Re-decide the thread count when `interval_s` has passed; return it."""
        import torch

        if self.budget <= 1 or time.monotonic() - self._last[0] < self.interval_s:
            return self.threads
        now = self._sample()
        wall = now[0] - self._last[0]
        others = max(0.0, (now[1] - self._last[1]) - (now[2] - self._last[2])) / wall
        self._last = now
        threads = max(1, min(self.budget, self.cpus - round(others)))
        if threads != self.threads:
            torch.set_num_threads(threads)
            self.threads = threads
        return threads
