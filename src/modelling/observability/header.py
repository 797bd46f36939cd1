"""What a run states at its start: the resolved config, the data, the model and the setup."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from src.config import Config
from src.core.constants import CLASS_NAMES
from src.modelling.labels import config_toml
from src.modelling.model import count_parameters
from src.modelling.training.class_mix import class_shares
from src.modelling.training.distributed import World


def _distribution(counts: Any) -> str:
    counts = [int(c) for c in counts]
    total = sum(counts) or 1
    return ", ".join(
        f"{name} {c} ({100 * c / total:.1f}%)" for name, c in zip(CLASS_NAMES, counts, strict=True)
    )


def weight_lines(setting: Any, weights: Sequence[float], train_counts: Any) -> list[str]:
    """The class weights beside the training mix: per class its share of the training
    windows, its weight and its share of the weighted loss mass."""
    shown = setting if isinstance(setting, str) else ",".join(f"{w:g}" for w in setting)
    lines = [f"[WEIGHTS] train.class_weights {shown}, beside the training mix:"]
    for c in class_shares(train_counts, weights):
        lines.append(
            f"[WEIGHTS]   {c.name:<9s} {100 * c.share:5.1f}% of windows | weight "
            f"{c.weight:7.3f} | {100 * c.loss_share:5.1f}% of the weighted loss"
        )
    return lines


def run_header(
    cfg: Config,
    data: Any,
    model: nn.Module,
    device: torch.device,
    precision: str,
    world: World,
    paths: Any,
    class_weights: Sequence[float] | None = None,
) -> str:
    """Config (as TOML, the lake's labels as comments), data summary, the class weights
    beside the training mix (`class_weights`: the resolved numbers; default: the
    configured ones), model size, device, precision and effective batch."""
    s = data.summary
    t = cfg.train
    weights = class_weights if class_weights is not None else t.class_weights
    lines = [
        f"[RUN] log {paths.log}",
        "[CONFIG] resolved settings:",
        *(f"    {line}" for line in config_toml(cfg).splitlines() if line),
        f"[DATA] {s['files']} files, {s['rows']} rows, lake {cfg.paths.data_dir}",
    ]
    for split in ("train", "val", "test"):
        if split in s.get("windows", {}):
            lines.append(
                f"[DATA] {split:5s}: {s['windows'][split]} windows | "
                f"{_distribution(s['label_counts'][split])}"
            )
    lines.append(
        f"[DATA] in no split (purged, embargoed, before the training start): "
        f"{s.get('purged', 0)} | dropped to "
        f"balance ranks: {s.get('dropped', 0)}"
    )
    lines += weight_lines(t.class_weights, weights, data.index.label_counts("train"))
    lines.append(f"[MODEL] SAIMP, {count_parameters(model):,} parameters")
    lines.append(
        f"[SETUP] device {device} | precision {precision} | {world.world_size} process(es) | "
        f"effective batch {t.batch_size} x {t.accumulation_steps} x {world.world_size} = "
        f"{t.batch_size * t.accumulation_steps * world.world_size}"
    )
    return "\n".join(lines)
