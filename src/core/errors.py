"""User-facing errors and the one place that turns them into a stderr line and an exit code."""

from __future__ import annotations

import argparse
import logging
import os
from collections.abc import Callable

from src.core.logs import ROOT, setup_console


class UserError(Exception):
    """A mistake the user can fix (bad flag, missing file or column, bad data).

    The message names the file, column or flag and what to do; command-line entry
    points print it as one line on stderr and exit with status 2, without a traceback.
    """


class DataError(UserError):
    """Input data breaks the data contract (missing column, NaN, unsorted time, corrupt file)."""


def run_cli(main: Callable[[list[str] | None], int | None], argv: list[str] | None = None) -> int:
    """Run a command-line `main` with logging set up, mapping a `UserError` (or an
    `OSError` on a user's path) to one `error: ...` line on stderr and exit code 2."""
    setup_console(int(os.environ.get("RANK", "0") or 0))
    try:
        code = main(argv)
    except UserError as err:
        logging.getLogger(ROOT).error(str(err))
        return 2
    except OSError as err:  # a user's path: a full disk, a lost permission, a file in the way
        where = f"{err.filename}: " if err.filename else ""
        logging.getLogger(ROOT).error(f"{where}{err.strerror or err}")
        return 2
    return int(code or 0)


class ArgumentParser(argparse.ArgumentParser):
    """argparse whose usage errors are `UserError`s: one `error: ...` line, exit status 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UserError(f"{message} (see {self.prog} --help)")
