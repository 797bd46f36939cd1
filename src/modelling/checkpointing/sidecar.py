"""The best checkpoint's JSON sidecar: what inference needs beside the weights, and what
makes two checkpoints, or a checkpoint and a lake, comparable."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from torch import nn

from src.config import Config
from src.core.constants import CLASS_NAMES
from src.modelling.labels import label_meta, lake_label
from src.modelling.training.class_weights import resolve_class_weights


def sidecar_for(
    cfg: Config, data: Any, model: nn.Module, class_weights: Sequence[float] | None = None
) -> dict[str, Any]:
    """Everything inference needs beside the weights: model config, features,
    normalisation, and the lake's bar interval and label settings as read from it.

    `class_weights`: the weights the loss used (default: `cfg.train.class_weights`
    resolved on the training split); recorded as numbers, while `config` keeps the
    setting as given (e.g. "balanced").
    """
    if class_weights is None:
        class_weights = resolve_class_weights(
            cfg.train.class_weights, data.index.label_counts("train")
        )
    return {
        "format": "saimp-checkpoint",
        "version": 1,
        "model": dataclasses.asdict(model.cfg),
        "features": list(data.index.feature_names),
        "normalizer": data.normalizer.to_dict(),
        "class_names": list(CLASS_NAMES),
        "bar_ms": data.index.bar_ms,
        "label": lake_label(data.index.meta),
        "class_weights": [float(w) for w in class_weights],
        "split": dataclasses.asdict(data.bounds),
        "label_counts": {
            split: [int(c) for c in counts]
            for split, counts in data.summary["label_counts"].items()
        },
        "lake": {"files": int(data.summary["files"]), "rows": int(data.summary["rows"])},
        "config": cfg.to_dict(),
    }


def sidecar_label(sidecar: dict[str, Any]) -> dict[str, Any] | None:
    """The label settings of the lake a checkpoint was trained on: the sidecar's `label`;
    for sidecars written before it was recorded, its config's `label` (what the run
    was told, which may not be the lake's)."""
    label = sidecar.get("label")
    if isinstance(label, dict):
        return label
    return (sidecar.get("config") or {}).get("label")


def sidecar_class_weights(sidecar: dict[str, Any]) -> list[float] | None:
    """The class weights the checkpoint's loss used: the recorded numbers, else (older
    sidecars) the config's when they are numbers; None when unknown."""
    weights = sidecar.get("class_weights")
    if weights is None:
        weights = ((sidecar.get("config") or {}).get("train") or {}).get("class_weights")
    if not isinstance(weights, list | tuple):
        return None
    return [float(w) for w in weights]


def comparable_part(sidecar: dict[str, Any]) -> dict[str, Any]:
    """What two best checkpoints must share for their validation metrics to be compared:
    the data (lake size, features, bar interval, split), the labels and the model shape.

    Settings that only change how a model was found (learning rate, weight decay, class
    weights, dropout, epochs, seed, the selection metric: both sidecars hold every
    validation metric) are left out: that is what a better model may differ in. Labels
    are compared in `label_meta`'s canonical form, so a sidecar from before the
    `barriers` setting equals one with "fixed" and the same numbers.
    """
    model = sidecar.get("model")
    if isinstance(model, dict):
        model = {k: v for k, v in model.items() if k != "dropout"}
    keys = ("features", "bar_ms", "split", "lake")
    split = sidecar.get("split")
    if isinstance(split, dict):  # a split recorded before the embargo: none, from -inf
        split = {"embargo_ms": 0, "train_start_ms": None, **split}
    return {
        **{k: sidecar.get(k) for k in keys},
        "split": split,
        "model": model,
        "label": label_meta(sidecar_label(sidecar)),
    }


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


def _feature_difference(lake: list[str], checkpoint: list[str]) -> str:
    missing = [f for f in checkpoint if f not in lake]
    extra = [f for f in lake if f not in checkpoint]
    parts = [f"lake lacks {', '.join(missing)}"] if missing else []
    parts += [f"lake has {', '.join(extra)} besides"] if extra else []
    return "; ".join(parts) or "the same features in another order"


def lake_mismatch(sidecar: dict[str, Any], index: Any, command: str = "evaluate") -> str | None:
    """Why a lake cannot be read with a checkpoint, in one line, or None when it can.

    `index`: the lake's `LakeIndex` (its `bar_ms`, `feature_names`, `meta`); `command`:
    what the advice at the end tells the user to do on the right lake. The lake
    must have the checkpoint's bar interval, feature names (in order: they are the
    model's input columns) and label settings. Labels are compared only when the
    sidecar records the lake's (its top-level `label`): an older sidecar's config held
    what the run was told, not necessarily what its lake was prepared with.
    """
    where = f"--data-dir {index.data_dir}"
    advice = f"{command} on a lake prepared with the checkpoint's settings"
    recorded_bar = sidecar.get("bar_ms")
    if recorded_bar is not None and int(recorded_bar) != int(index.bar_ms):
        return (
            f"{where}: its bar interval differs from the checkpoint's (lake vs checkpoint: "
            f"bar_ms {int(index.bar_ms)} vs {int(recorded_bar)}); {advice}"
        )
    if isinstance(sidecar.get("label"), dict):
        changed = differences(
            {"label": label_meta(lake_label(index.meta))}, {"label": label_meta(sidecar["label"])}
        )
        if changed:
            return (
                f"{where}: its labels differ from the checkpoint's (lake vs checkpoint: "
                f"{'; '.join(changed)}); {advice}"
            )
    features = [str(f) for f in sidecar.get("features") or []]
    if features and features != list(index.feature_names):
        return (
            f"{where}: its features differ from the checkpoint's "
            f"({_feature_difference(list(index.feature_names), features)}); {advice}"
        )
    return None
