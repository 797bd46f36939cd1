"""User-facing errors and the one place that turns them into a stderr line and an exit code."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable


class UserError(Exception):
    """A mistake the user can fix (bad flag, missing file or column, bad data).

    The message names the file, column or flag and what to do; command-line entry
    points print it as one line on stderr and exit with status 2, without a traceback.
    """


class DataError(UserError):
    """Input data breaks the data contract (missing column, NaN, unsorted time, corrupt file)."""


def run_cli(main: Callable[[list[str] | None], int | None], argv: list[str] | None = None) -> int:
    """Run a command-line `main`, mapping a `UserError` to one stderr line and exit code 2."""
    try:
        code = main(argv)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr, flush=True)
        return 2
    return int(code or 0)


class ArgumentParser(argparse.ArgumentParser):
    """argparse whose usage errors are `UserError`s: one `error: ...` line, exit status 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UserError(f"{message} (see {self.prog} --help)")
