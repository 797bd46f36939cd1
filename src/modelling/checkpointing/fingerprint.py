"""The settings that change a run's result, and how two runs differ in them.

A resumed run must have the same fingerprint as the run that wrote its `last`
checkpoint; anything else would silently continue a different experiment.
"""

from __future__ import annotations

from typing import Any

from src.config import Config, LabelConfig, TrainConfig

# Settings that do not change the trained parameters, so a resumed run may change them.
_FREE_TO_CHANGE = {
    "data": {"num_workers", "prefetch_factor", "synthetic_bars", "synthetic_seed", "bar_minutes"},
    "train": {
        "epochs",
        "early_stopping_patience",
        "log_every",
        "micro_batch",
        "checkpoint_every_windows",
        "replace_best",
        "threads",
    },
}


def result_fingerprint(cfg: Config, data: Any) -> dict[str, Any]:
    """Flat `section.key -> value` of everything that changes the result of a run.

    A resumed run must match it: batch, accumulation, model, labels (`cfg.label`, the
    lake's), split, seed and the data itself (files and rows). Epochs, logging and the
    micro-batch (which does not change the gradient) may differ.
    """
    values = cfg.to_dict()
    flat = label_fingerprint(cfg.label)
    flat.update(
        (f"{section}.{key}", value)
        for section in ("data", "model", "train")
        for key, value in values[section].items()
        if key not in _FREE_TO_CHANGE.get(section, set())
    )
    # Left out at their defaults, so a state written before they existed still resumes.
    for key, default in (("data.embargo_minutes", 0), ("data.train_start", None)):
        if key in flat and flat[key] == default:
            del flat[key]
    flat["lake.files"] = int(data.summary["files"])
    flat["lake.rows"] = int(data.summary["rows"])
    return flat


def label_fingerprint(label: LabelConfig) -> dict[str, Any]:
    """`label.key -> value` of the settings that define the labels (`to_meta()`: the
    barrier numbers of their kind only). `barriers` is left out when "fixed", so a state
    written before that setting existed, with the same numbers, still resumes."""
    meta = label.to_meta()
    if meta.get("barriers") == "fixed":
        del meta["barriers"]
    return {f"label.{key}": value for key, value in meta.items()}


def train_fingerprint(train: TrainConfig) -> dict[str, Any]:
    """The part of `result_fingerprint` that `train()` itself sees: its `TrainConfig`.

    What a library caller's resume is checked against when it gives no fingerprint of
    its own (a changed accumulation or precision is refused, as on the command line).
    """
    free = _FREE_TO_CHANGE["train"]
    values = Config(train=train).to_dict()["train"]
    return {f"train.{k}": v for k, v in values.items() if k not in free}


def fingerprint_difference(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """Human-readable differences between two fingerprints (flat dicts of settings)."""
    keys = sorted(set(saved) | set(current))
    return [
        f"{k}: checkpoint has {saved.get(k)!r}, this run has {current.get(k)!r}"
        for k in keys
        if saved.get(k) != current.get(k)
    ]
