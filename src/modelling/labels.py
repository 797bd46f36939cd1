"""The labels a lake was prepared with: one source of truth for train, tune and evaluate.

Labels are made once, by `saimp prepare`, which records its settings in every lake
file's `saimp` metadata (`LabelConfig.to_meta()`). A `label.*` setting given to `saimp
train` or `saimp tune` could not change what the model learns; it would only make the
run's records (header, sidecar, resume fingerprint) disagree with the lake. So such
settings are refused with a pointer to `prepare`, and a run's `cfg.label` is replaced
by the lake's (`with_lake_labels`). Pure functions, apart from raising.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import tomli_w

from src.config import Config, LabelConfig, to_toml
from src.core.errors import DataError, UserError

_FIELDS = tuple(f.name for f in dataclasses.fields(LabelConfig))


def label_setting_error(key: str, value: Any, where: str) -> UserError:
    """The one-line error for a label setting given to a command that only reads labels.

    `where` names what the user typed (`--set label.upper1_pct`, `--config run.toml:
    label.upper1_pct`); the message names the `saimp prepare` flag that sets it.
    """
    flag = "--" + key.replace("_", "-")
    shown = "VALUE" if value is None else value
    return UserError(
        f"{where}: labels are made by saimp prepare (saimp prepare {flag} {shown} ...); "
        "train reads them from the lake"
    )


def refuse_label_set(overrides: Mapping[str, Mapping[str, Any]]) -> None:
    """Raise for any `--set label.*` (`overrides`: `parse_set`'s section -> key -> text)."""
    for key, value in (overrides.get("label") or {}).items():
        raise label_setting_error(key, value, f"--set label.{key}")


def refuse_label_table(tables: Mapping[str, Any], where: str) -> None:
    """Raise for a `[label]` value of a `--config` file that differs from the default.

    Values equal to the defaults pass: resolved configs and `best.toml` files written
    before labels came from the lake hold them. Keys `LabelConfig` does not have are
    left to `apply_overrides`, which names them as unknown.
    """
    table = tables.get("label")
    if not isinstance(table, Mapping):
        return
    defaults = LabelConfig()
    for key, value in table.items():
        if key in _FIELDS and value != getattr(defaults, key):
            raise label_setting_error(key, value, f"--config {where}: label.{key}")


def lake_label(meta: Mapping[str, Any] | None) -> dict[str, Any]:
    """The label settings a lake's metadata records, as read ({} when it records none)."""
    label = (meta or {}).get("label")
    return dict(label) if isinstance(label, Mapping) else {}


def label_config(label: Mapping[str, Any], where: str) -> LabelConfig:
    """`LabelConfig` of recorded label settings; keys an older lake lacks take defaults
    (a record without `barriers` is of fixed barriers, the only kind there was).

    Raises `DataError` naming `where` when a key is unknown (a newer `prepare`) or a
    value is invalid.
    """
    unknown = sorted(set(label) - set(_FIELDS))
    if unknown:
        raise DataError(
            f"{where}: the lake's label settings {', '.join(unknown)} are unknown to this "
            "trainer; update it, or re-run saimp prepare with this version"
        )
    try:
        return LabelConfig(**label)
    except (TypeError, ValueError) as err:
        raise DataError(
            f"{where}: the lake's label settings are not valid ({err}); re-run saimp prepare"
        ) from None


def label_meta(label: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """Recorded label settings in one canonical form (`to_meta()`, defaults filled in), so
    that a record without `barriers` equals one with "fixed" and the same numbers.

    None for None; the dict as given when it cannot be read as label settings (then
    only an identical record equals it).
    """
    if label is None:
        return None
    try:
        return LabelConfig(**label).to_meta()
    except (TypeError, ValueError):
        return dict(label)


def with_lake_labels(cfg: Config, meta: Mapping[str, Any] | None, where: str) -> Config:
    """`cfg` with `label` replaced by the settings the lake's metadata `meta` records."""
    return dataclasses.replace(cfg, label=label_config(lake_label(meta), where))


def config_toml(cfg: Config, *, from_lake: bool = True) -> str:
    """The resolved config as TOML that `--config` reads back to the same settings, with
    the `[label]` table as comments: the labels are shown, but are not a train setting
    (a `[label]` that differs from the defaults is refused by `refuse_label_table`).

    `from_lake`: `cfg.label` holds the lake's labels (a run's, after `with_lake_labels`);
    False: it holds defaults no lake was read for, so only a note is written.
    """
    text = to_toml(dataclasses.replace(cfg, label=LabelConfig()))
    head, *rows = tomli_w.dumps({"label": cfg.label.to_meta()}).strip().splitlines()
    start = text.index(head)
    end = text.find("\n[", start)
    end = len(text) if end < 0 else end + 1  # the next table, after the blank line
    if from_lake:
        comment = [f"# {head} made by saimp prepare; read from the lake, not set here"]
        comment += [f"# {row}" for row in rows]
    else:
        comment = [f"# {head} made by saimp prepare; each run reads them from its lake"]
    return text[:start] + "\n".join(comment) + "\n\n" + text[end:]
