"""SIGINT/SIGTERM: finish the current optimizer step, write `last`, exit 130/143.

The handler only records the signal; the loop notices it at the next window boundary
(every rank agrees through the window's all-reduce) and the trainer saves and raises
`RunInterrupted`. Nothing is logged or written from inside the handler.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

SIGNAL_EXIT_CODES = {signal.SIGINT: 130, signal.SIGTERM: 143}


class RunInterrupted(Exception):
    """SIGINT/SIGTERM arrived; the `last` checkpoint was written at a window boundary."""

    def __init__(self, signum: int, last_path: Path) -> None:
        super().__init__(f"interrupted by {signal.Signals(signum).name}")
        self.signum = signum
        self.last_path = last_path

    @property
    def exit_code(self) -> int:
        return SIGNAL_EXIT_CODES.get(self.signum, 128 + self.signum)


@contextmanager
def stop_on_signals(target: Any) -> Iterator[None]:
    """While active, SIGINT/SIGTERM set `target.stop_signal` (the loop stops after its step).

    A second SIGINT interrupts at once (the usual Ctrl-C twice). Outside the main thread
    (where Python cannot install handlers) this does nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def request_stop(signum: int, frame: Any) -> None:
        if target.stop_signal == signal.SIGINT and signum == signal.SIGINT:
            raise KeyboardInterrupt
        target.stop_signal = signum

    previous = {s: signal.signal(s, request_stop) for s in SIGNAL_EXIT_CODES}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
