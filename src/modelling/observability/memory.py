"""Memory and throughput figures: machine RAM (psutil), VRAM reserved by torch, samples/s."""

from __future__ import annotations

import time

import psutil
import torch

GB = 1024**3


def memory_usage(device: torch.device | None = None) -> dict[str, float | None]:
    """Machine RAM in use and in total, and on a GPU the VRAM reserved by torch and in total (GB).

    The VRAM values are None off CUDA.
    """
    vm = psutil.virtual_memory()
    usage: dict[str, float | None] = {
        "ram_gb": (vm.total - vm.available) / GB,
        "ram_total_gb": vm.total / GB,
        "vram_gb": None,
        "vram_total_gb": None,
    }
    if device is not None and device.type == "cuda":
        usage["vram_gb"] = torch.cuda.memory_reserved(device) / GB
        usage["vram_total_gb"] = torch.cuda.get_device_properties(device).total_memory / GB
    return usage


def memory_lines(device: torch.device | None = None) -> list[str]:
    """`[RAM] used / total` for the machine, and `[VRAM] reserved / total` on a GPU."""
    m = memory_usage(device)
    lines = [f"[RAM] {m['ram_gb']:.1f} GB / {m['ram_total_gb']:.1f} GB"]
    if m["vram_gb"] is not None:
        lines.append(f"[VRAM] {m['vram_gb']:.1f} GB / {m['vram_total_gb']:.1f} GB")
    return lines


class Throughput:
    """Samples per second since `start()`, from the samples reported with `add()`."""

    def __init__(self) -> None:
        self.start()

    def start(self) -> None:
        self.started = time.perf_counter()
        self.samples = 0

    def add(self, samples: int) -> None:
        self.samples += samples

    @property
    def per_second(self) -> float | None:
        elapsed = time.perf_counter() - self.started
        return self.samples / elapsed if elapsed > 0 and self.samples else None
