"""The `--device` flag of the inference commands (evaluate, calibrate, predict, backtest)."""

from __future__ import annotations

import torch

from src.core.errors import UserError


def resolve_device(name: str) -> torch.device:
    """`auto` (CUDA when there is one, else the CPU), `cpu`, `cuda` or `cuda:N`; a
    `UserError` naming the flag for an unknown device or CUDA that is not there."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UserError(f"--device: unknown device {name!r}; use cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"--device {name}: CUDA is not available here; use --device cpu")
    return device
