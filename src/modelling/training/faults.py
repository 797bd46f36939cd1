"""Injected faults, for the tests of recovery paths (never set in a normal run).

Set through the environment so that a test can reach a training subprocess:
- `SAIMP_FAULT_OOM_AT_WINDOW=N`: the N-th training window (counted over the run, from 1)
  raises an out-of-memory error on its first attempt, as CUDA would.
- `SAIMP_FAULT_KILL_IN_SAVE=N`: the process SIGKILLs itself in the middle of writing its
  N-th `last` checkpoint (the data is written but not yet fsynced or renamed).
- `SAIMP_FAULT_KILL_AT_WINDOW=N`: the process SIGKILLs itself inside the N-th training
  window (counted over the run, from 1), after its first backward pass and before the
  optimizer step: a kill mid-window at a known place, where a timed kill is a race.
"""

from __future__ import annotations

import os
import signal
from dataclasses import dataclass

import torch

OOM_ENV = "SAIMP_FAULT_OOM_AT_WINDOW"
KILL_IN_SAVE_ENV = "SAIMP_FAULT_KILL_IN_SAVE"
KILL_AT_WINDOW_ENV = "SAIMP_FAULT_KILL_AT_WINDOW"


def _int_env(name: str) -> int | None:
    value = os.environ.get(name)
    return int(value) if value else None


@dataclass
class Faults:
    oom_at_window: int | None = None
    kill_in_save: int | None = None
    kill_at_window: int | None = None
    _saves: int = 0

    @classmethod
    def from_env(cls) -> Faults:
        return cls(
            oom_at_window=_int_env(OOM_ENV),
            kill_in_save=_int_env(KILL_IN_SAVE_ENV),
            kill_at_window=_int_env(KILL_AT_WINDOW_ENV),
        )

    def maybe_oom(self, window: int) -> None:
        if self.oom_at_window == window:
            self.oom_at_window = None  # once: the retry succeeds
            raise torch.OutOfMemoryError(f"injected out-of-memory at window {window}")

    def maybe_kill_in_save(self) -> None:
        self._saves += 1
        if self.kill_in_save == self._saves:
            os.kill(os.getpid(), signal.SIGKILL)

    def maybe_kill_in_window(self, window: int) -> None:
        if self.kill_at_window == window:
            os.kill(os.getpid(), signal.SIGKILL)
