"""What a run states at its start: the resolved config, the data, the model and the setup."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from src.config import Config, to_toml
from src.core.constants import CLASS_NAMES
from src.modelling.model import count_parameters
from src.modelling.training.distributed import World


def _distribution(counts: Any) -> str:
    counts = [int(c) for c in counts]
    total = sum(counts) or 1
    return ", ".join(
        f"{name} {c} ({100 * c / total:.1f}%)" for name, c in zip(CLASS_NAMES, counts, strict=True)
    )


def run_header(
    cfg: Config,
    data: Any,
    model: nn.Module,
    device: torch.device,
    precision: str,
    world: World,
    paths: Any,
) -> str:
    """Config (as TOML), data summary, model size, device, precision and effective batch."""
    s = data.summary
    t = cfg.train
    lines = [
        f"[RUN] log {paths.log}",
        "[CONFIG] resolved settings:",
        *(f"    {line}" for line in to_toml(cfg).splitlines() if line),
        f"[DATA] {s['files']} files, {s['rows']} rows, lake {cfg.paths.data_dir}",
    ]
    for split in ("train", "val", "test"):
        if split in s.get("windows", {}):
            lines.append(
                f"[DATA] {split:5s}: {s['windows'][split]} windows | "
                f"{_distribution(s['label_counts'][split])}"
            )
    lines.append(
        f"[DATA] purged (label horizon crosses a split): {s.get('purged', 0)} | dropped to "
        f"balance ranks: {s.get('dropped', 0)}"
    )
    lines.append(f"[MODEL] SAIMP, {count_parameters(model):,} parameters")
    lines.append(
        f"[SETUP] device {device} | precision {precision} | {world.world_size} process(es) | "
        f"effective batch {t.batch_size} x {t.accumulation_steps} x {world.world_size} = "
        f"{t.batch_size * t.accumulation_steps * world.world_size}"
    )
    return "\n".join(lines)
