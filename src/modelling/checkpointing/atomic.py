"""Checkpoint files on disk: written atomically, read without pickle.

Every file is written to a temporary file in the same directory, flushed and fsynced,
then moved over the old one with `os.replace`, so a crash at any moment leaves either
the previous complete file or the new complete file, never a truncated one. Every read
uses `torch.load(weights_only=True)`, which refuses a file that would need pickle to
run code.
"""

from __future__ import annotations

import json
import os
import pickle
import re
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

import torch

from src.core.errors import UserError


class CheckpointError(UserError):
    """A checkpoint is missing, truncated, not ours, or unsafe to load."""


def _umask() -> int:
    mask = os.umask(0o022)  # reading the umask means setting it; put it straight back
    os.umask(mask)
    return mask


def atomic_write(path: Path, write: Callable[[BinaryIO], None]) -> None:
    """Write `path` through `write(fh)` so that readers only ever see a complete file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    # mkstemp makes the file private (0600); give it the mode any new file would get.
    os.chmod(tmp, 0o666 & ~_umask())
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    # Make the rename itself durable (a power cut could otherwise lose it).
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def atomic_save_torch(obj: Any, path: Path) -> None:
    atomic_write(path, lambda fh: torch.save(obj, fh))


def atomic_save_json(obj: Any, path: Path) -> None:
    text = json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n"
    atomic_write(path, lambda fh: fh.write(text.encode()))


def _json_default(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


_ADVICE = ("Weights only load failed", "Check the documentation", "Please file an issue")


def _unpickler_reason(message: str) -> str:
    """The sentence of torch's weights-only error that says what was refused.

    torch wraps the cause (e.g. "Trying to load unsupported GLOBAL posix.system whose
    module posix is blocked", "Unsupported operand 149") in paragraphs of advice; keep
    the first paragraph that is not advice, cut at a sentence end, never inside a word.
    """
    paragraphs = [" ".join(p.split()) for p in re.split(r"\n\s*\n", message) if p.strip()]
    useful = [p for p in paragraphs if not p.startswith(_ADVICE)] or paragraphs or [""]
    text = useful[0].split("WeightsUnpickler error:")[-1].strip()
    sentence = text.split(". ", 1)[0].rstrip(".")
    return sentence or "refused by the weights-only unpickler"


def safe_load(path: Path, what: str = "checkpoint") -> Any:
    """`torch.load` with `weights_only=True`, turning every failure into one clear error."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{what} not found: {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise CheckpointError(
            f"{path} is refused: loading it would need pickle to run code "
            f"({_unpickler_reason(str(err))}); only weights-only checkpoints are loaded"
        ) from None
    except Exception as err:  # a damaged file can fail in any of the unpickler's layers
        first = str(err).splitlines()[0][:160] if str(err) else type(err).__name__
        raise CheckpointError(
            f"{path} is not a readable checkpoint (truncated or not a torch file): {first}"
        ) from None
