"""What a run states at its start, and what its checkpoint's sidecar records."""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch import nn

from src.config import Config, to_toml
from src.core.constants import CLASS_NAMES
from src.modelling.distributed import World
from src.modelling.model import count_parameters


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


def sidecar_for(cfg: Config, data: Any, model: nn.Module) -> dict[str, Any]:
    """Everything inference needs beside the weights: model config, features, normalisation."""
    return {
        "format": "saimp-checkpoint",
        "version": 1,
        "model": dataclasses.asdict(model.cfg),
        "features": list(data.index.feature_names),
        "normalizer": data.normalizer.to_dict(),
        "class_names": list(CLASS_NAMES),
        "bar_ms": data.index.bar_ms,
        "split": dataclasses.asdict(data.bounds),
        "label_counts": {
            split: [int(c) for c in counts]
            for split, counts in data.summary["label_counts"].items()
        },
        "config": cfg.to_dict(),
    }


# Settings that do not change the trained parameters, so a resumed run may change them.
_FREE_TO_CHANGE = {
    "data": {"num_workers", "prefetch_factor", "synthetic_bars", "synthetic_seed", "bar_minutes"},
    "train": {
        "epochs",
        "early_stopping_patience",
        "log_every",
        "micro_batch",
        "checkpoint_every_windows",
    },
}


def result_fingerprint(cfg: Config, data: Any) -> dict[str, Any]:
    """Flat `section.key -> value` of everything that changes the result of a run.

    A resumed run must match it: batch, accumulation, model, labels, split, seed and the
    data itself (files and rows). Epochs, logging and the micro-batch (which does not
    change the gradient) may differ.
    """
    values = cfg.to_dict()
    flat = {
        f"{section}.{key}": value
        for section in ("label", "data", "model", "train")
        for key, value in values[section].items()
        if key not in _FREE_TO_CHANGE.get(section, set())
    }
    flat["lake.files"] = int(data.summary["files"])
    flat["lake.rows"] = int(data.summary["rows"])
    return flat
