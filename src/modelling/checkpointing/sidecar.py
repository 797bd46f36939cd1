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
        "lake": {"files": int(data.summary["files"]), "rows": int(data.summary["rows"])},
        "config": cfg.to_dict(),
    }


def comparable_part(sidecar: dict[str, Any]) -> dict[str, Any]:
    """What two best checkpoints must share for their validation metrics to be compared:
    the data (lake size, features, bar interval, split), the labels and the model shape.

    Settings that only change how a model was found (learning rate, weight decay, class
    weights, dropout, epochs, seed, the selection metric: both sidecars hold every
    validation metric) are left out: that is what a better model may differ in.
    """
    label = (sidecar.get("config") or {}).get("label")
    model = sidecar.get("model")
    if isinstance(model, dict):
        model = {k: v for k, v in model.items() if k != "dropout"}
    keys = ("features", "bar_ms", "split", "lake")
    return {**{k: sidecar.get(k) for k in keys}, "model": model, "label": label}


def differences(a: dict[str, Any], b: dict[str, Any], prefix: str = "") -> list[str]:
    """`key: a -> b` for every leaf that differs between two nested dicts."""
    out = []
    for key in sorted(set(a) | set(b)):
        x, y = a.get(key), b.get(key)
        if isinstance(x, dict) and isinstance(y, dict):
            out += differences(x, y, f"{prefix}{key}.")
        elif x != y:
            out.append(f"{prefix}{key} {x!r} vs {y!r}")
    return out
