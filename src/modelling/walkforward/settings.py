"""The walk-forward's own settings, recorded in `{out}/walk_forward.json` at the start.

A rerun into the same `--out` continues the recorded walk-forward; one whose settings
differ (flags, train flags, or the lake itself) is refused in one line naming each
difference, so finished folds are never pooled with folds made another way.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from src.core.errors import UserError
from src.modelling.checkpointing.atomic import atomic_save_json

SETTINGS_NAME = "walk_forward.json"
VERSION = 1
#: Recorded key -> the flag a user changes it with (for the refusal's message).
FLAGS: dict[str, str] = {
    "data_dir": "--data-dir",
    "folds": "--folds",
    "scheme": "--expanding/--rolling",
    "val_fraction": "--val-fraction",
    "embargo_minutes": "--embargo-minutes",
    "fee_bps": "--fee-bps",
    "slippage_bps": "--slippage-bps",
    "short_stops": "--short-stops",
    "random_draws": "--random-draws",
    "random_seed": "--random-seed",
    "train_args": "saimp train flags",
    "lake": "the lake's contents",
}


def settings_path(out: Path) -> Path:
    return Path(out) / SETTINGS_NAME


def differences(recorded: dict[str, Any], now: dict[str, Any]) -> list[str]:
    """'FLAG: RECORDED recorded, NOW now' for each setting that differs."""
    out = []
    for key in sorted(
        set(recorded) | set(now), key=lambda k: list(FLAGS).index(k) if k in FLAGS else 99
    ):
        if recorded.get(key) != now.get(key):
            flag = FLAGS.get(key, key)
            out.append(f"{flag}: {_shown(recorded.get(key))} recorded, {_shown(now.get(key))} now")
    return out


def _shown(value: Any) -> str:
    if isinstance(value, list):
        return " ".join(map(str, value)) or "(none)"
    return json.dumps(value) if isinstance(value, dict) else str(value)


def check_settings(out: Path, settings: dict[str, Any]) -> bool:
    """Whether `out` already holds this walk-forward (False: a new one). Raises
    `UserError` when it holds one with other settings, or an unreadable record."""
    path = settings_path(out)
    if not path.exists():
        return False
    try:
        recorded = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise UserError(f"--out {out}: cannot read {path} ({err}); use another --out") from None
    changed = differences(recorded, {**settings, "version": VERSION})
    if changed:
        raise UserError(
            f"--out {out} holds a walk-forward with other settings ({'; '.join(changed)}); "
            "rerun with the recorded settings to continue it, or pass another --out"
        )
    return True


def record_settings(out: Path, settings: dict[str, Any]) -> None:
    atomic_save_json({**settings, "version": VERSION}, settings_path(out))
