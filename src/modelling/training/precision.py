"""Mixed precision as two objects the loop uses: an autocast context and a grad scaler.

The scaler is active only for fp16: bf16 has fp32's exponent range and needs no loss
scaling, and fp32 needs none at all.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from dataclasses import dataclass

import torch

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_precision(precision: str, device: torch.device) -> str:
    """Turn "auto" into the best mode the device has: bf16, else fp16 on CUDA, else fp32."""
    if precision not in PRECISIONS:
        raise ValueError(f"--precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    # On a CPU, bf16 autocast is only faster with native bf16 matmuls; fp32 is the safe choice.
    return "fp32"


@dataclass(frozen=True)
class Precision:
    """What the loop needs for one precision mode on one device."""

    mode: str
    device_type: str

    def autocast(self) -> AbstractContextManager:
        dtype = _DTYPES.get(self.mode)
        return torch.autocast(self.device_type, dtype=dtype, enabled=dtype is not None)

    def make_scaler(self) -> torch.amp.GradScaler:
        return torch.amp.GradScaler(self.device_type, enabled=self.mode == "fp16")


def make_precision(precision: str, device: torch.device) -> Precision:
    return Precision(resolve_precision(precision, device), device.type)
