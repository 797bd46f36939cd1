"""The best checkpoint's JSON sidecar: what inference needs beside the weights."""

from __future__ import annotations

import dataclasses
from typing import Any

from torch import nn

from src.config import Config
from src.core.constants import CLASS_NAMES


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
