"""Output locations probed before the work: a command fails in its first second, not after
an epoch, when it could not write where it was told to.

Each probe creates the directory if needed and writes and removes a small file in it, so
a file in the way, a missing permission or a read-only file system is caught with the
flag's name. Nothing that exists is changed.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from src.core.errors import UserError


def _blocking_file(path: Path) -> Path | None:
    """The first component of `path` that exists and is not a directory."""
    for part in [*reversed(path.parents), path]:
        if part.exists() and not part.is_dir():
            return part
    return None


def writable_dir(path: Path | str, flag: str) -> Path:
    """Create directory `path` if needed and prove a file can be written in it.

    Raises `UserError` naming `flag` and the reason (a file in the way, permission
    denied, read-only file system, disk full).
    """
    path = Path(path)
    blocker = _blocking_file(path)
    if blocker is not None:
        raise UserError(
            f"{flag}: {blocker} is a file, so {path} cannot be a directory; choose another "
            "path or move the file"
        )
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write-probe-", dir=path)
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        raise UserError(f"{flag}: cannot write in {path}: {err.strerror or err}") from None
    return path


def writable_file(path: Path | str, flag: str) -> Path:
    """Prove `path` can be written (atomically, beside itself): its directory is
    writable and `path` is not a directory. Leaves an existing file untouched."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"{flag}: {path} is a directory; give a file path such as {path}/x.pth")
    writable_dir(path.parent, flag)
    return path
