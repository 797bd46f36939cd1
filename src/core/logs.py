"""The one output channel: stdlib `logging`, configured once by each command's `main()`.

Every module logs through `logging.getLogger(__name__)`, under the `src` logger. A
command calls `setup_console(rank)` at its start: rank 0 prints INFO and above on
stdout (warnings and errors on stderr), other ranks only warnings and errors, prefixed
with their rank. `log_file(path)` adds the run's text log as a file handler for the
duration of a run, so the log holds every line the run printed, Python warnings
included, and the error that ended it.

A line meant for one side only carries `extra=CONSOLE_ONLY` or `extra=FILE_ONLY` (a
progress bar shows live what the log file keeps as lines). Console lines are written
through `tqdm.write`, which clears a live progress bar on the same stream and redraws it
after the line, so a line never garbles the bar.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = "src"
CONSOLE_ONLY = {"channel": "console"}
"""`extra=` of a record that the console shows and the log file does not."""
FILE_ONLY = {"channel": "file"}
"""`extra=` of a record that the log file keeps and the console does not."""


class _Channel(logging.Filter):
    """Lets through the records meant for this side (`channel` unset: both sides)."""

    def __init__(self, side: str) -> None:
        super().__init__()
        self.side = side

    def filter(self, record: logging.LogRecord) -> bool:
        return getattr(record, "channel", self.side) == self.side


class ConsoleHandler(logging.Handler):
    """INFO on stdout, warnings and errors on stderr, through `tqdm.write`.

    The streams are looked up when a line is written, not when the handler is made, so
    a redirected `sys.stdout` (a test's capture, a notebook) receives the lines.
    """

    def __init__(self) -> None:
        super().__init__()
        self.addFilter(_Channel("console"))

    def emit(self, record: logging.LogRecord) -> None:
        from tqdm import tqdm  # tqdm's import is not free; commands that never log skip it

        try:
            warn = record.levelno >= logging.WARNING
            stream = sys.stderr if warn else sys.stdout
            tqdm.write(self.format(record), file=stream)
            stream.flush()
        except Exception:
            self.handleError(record)


class _Format(logging.Formatter):
    """The message alone; `warning: ` / `error: ` before those levels; the rank off rank 0."""

    def __init__(self, rank: int = 0) -> None:
        super().__init__()
        self.prefix = f"[rank {rank}] " if rank else ""

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        if record.levelno >= logging.ERROR:
            text = f"error: {text}"
        elif record.levelno >= logging.WARNING:
            text = f"warning: {text}"
        return self.prefix + text


def _console_handlers(logger: logging.Logger) -> list[logging.Handler]:
    return [h for h in logger.handlers if isinstance(h, ConsoleHandler)]


def setup_console(rank: int = 0, capture_warnings: bool = True) -> logging.Logger:
    """Make the `src` logger print on the console (idempotent); return it.

    Rank 0 shows INFO and above; other ranks WARNING and above. With `capture_warnings`
    (a command owns its process), Python warnings are routed into logging, so they reach
    the console and the run log.
    """
    logger, warnings_logger = logging.getLogger(ROOT), logging.getLogger("py.warnings")
    for lg in (logger, warnings_logger):
        for h in _console_handlers(lg):
            lg.removeHandler(h)
    handler = ConsoleHandler()
    handler.setFormatter(_Format(rank))
    handler.setLevel(logging.INFO if rank == 0 else logging.WARNING)
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False  # no second copy through a root handler added later
    if capture_warnings:
        logging.captureWarnings(True)
        warnings_logger.addHandler(handler)
    return logger


def ensure_console(rank: int = 0) -> None:
    """For library callers of `train()`: print on the console unless logging is set up.

    Does nothing when the `src` logger or the root logger already has a handler (the
    caller configured logging, or a command did); leaves the caller's warnings alone.
    """
    if not logging.getLogger(ROOT).hasHandlers():
        setup_console(rank, capture_warnings=False)


@contextmanager
def log_file(path: Path | None) -> Iterator[None]:
    """While active, every `src` log line (and Python warning) is also appended to `path`.

    An exception that ends the block is written to the file as `error: ...` (the command
    prints it on the console after this), or at its own `log_level` when it has one.
    `None`: no file (ranks other than 0).
    """
    if path is None:
        yield
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(_Format())
    handler.addFilter(_Channel("file"))
    loggers = [logging.getLogger(ROOT), logging.getLogger("py.warnings")]
    logger = loggers[0]
    if logger.level == logging.NOTSET or logger.level > logging.INFO:
        logger.setLevel(logging.INFO)
    for lg in loggers:
        lg.addHandler(handler)
    try:
        yield
    except BaseException as err:
        if not isinstance(err, SystemExit | KeyboardInterrupt):
            # An exception that is a planned stop (a pruned trial) says so with `log_level`.
            level = getattr(err, "log_level", logging.ERROR)
            handler.emit(logger.makeRecord(ROOT, level, "", 0, str(err), (), None))
        raise
    finally:
        for lg in loggers:
            lg.removeHandler(handler)
        handler.close()
