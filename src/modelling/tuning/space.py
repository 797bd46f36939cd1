"""The search space of `saimp tune`: config fields and the ranges they are drawn from.

A space is a TOML file whose tables are config fields (`[train.lr]`, `[model.dropout]`),
each with either a range or a list of choices:

    [train.lr]
    low = 1e-5
    high = 1e-2
    log = true              # sample on a log scale

    [model.d_model]
    choices = [32, 64]

    [train.class_weights]   # a list setting: each choice is one list
    choices = [[1, 10, 10, 20], [1, 5, 5, 10]]

`[train.class_weights]` choices may also be "balanced" (weights from each trial's
training split). `label.*` fields are refused: the labels are made by `saimp prepare`,
one lake per label setting.

Integer fields take `step` (default 1). Every field, bound and choice is checked against
the config when the space is loaded (a typo or an out-of-range bound is one error line
naming the file and the key), so a search never starts on a space that cannot run.
"""

from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, get_args, get_origin, get_type_hints

from src.config import Config, apply_overrides
from src.core.errors import UserError
from src.modelling.labels import label_setting_error

BUILTIN: dict[str, dict[str, Any]] = {
    "train.lr": {"low": 1e-5, "high": 1e-2, "log": True},
    "train.weight_decay": {"low": 1e-6, "high": 1e-2, "log": True},
    "train.class_weights": {
        "choices": [[1, 10, 10, 20], [1, 5, 5, 10], [1, 3, 3, 6], [1, 1, 1, 1]]
    },
    "train.label_smoothing": {"low": 0.0, "high": 0.2},
    "model.dropout": {"low": 0.0, "high": 0.3},
}
"""The space searched without `--space`: what the original project tuned (class weights,
learning rate, weight decay, dropout, label smoothing)."""


@dataclass(frozen=True)
class Param:
    """One searched config field: a float or int range, or categorical choices."""

    name: str
    """`section.field`."""
    kind: str
    """"float", "int" or "categorical"."""
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: tuple[Any, ...] = ()

    def suggest(self, trial: Any) -> Any:
        """Draw this parameter from an Optuna trial."""
        if self.kind == "float":
            return trial.suggest_float(self.name, self.low, self.high, log=self.log)
        if self.kind == "int":
            step = int(self.step or 1)
            return trial.suggest_int(
                self.name, int(self.low), int(self.high), step=step, log=self.log
            )
        return trial.suggest_categorical(self.name, list(self.choices))


def overrides(params: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """`{"train.lr": 1e-3}` -> `{"train": {"lr": 1e-3}}` (what `apply_overrides` takes)."""
    out: dict[str, dict[str, Any]] = {}
    for key, value in params.items():
        section, _, name = key.partition(".")
        out.setdefault(section, {})[name] = value
    return out


def describe(params: dict[str, Any]) -> str:
    """`train.lr=0.00123, model.dropout=0.1` for a log line."""
    return ", ".join(
        f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items()
    )


def _choice(value: Any) -> Any:
    """A list choice becomes "1,10,10,20" (Optuna's choices are scalars; config reads it)."""
    return ",".join(str(v) for v in value) if isinstance(value, list) else value


def _param(name: str, spec: Any, base: Config, where: str) -> Param:
    section, dot, field = name.partition(".")
    sections = {f.name: getattr(base, f.name) for f in dataclasses.fields(base)}
    if not dot or section not in sections:
        raise UserError(f"{where}: [{name}] is not a config field; use [section.field]")
    if section == "label":  # made by `saimp prepare`; a trial cannot change them
        raise label_setting_error(field, None, f"{where}: [{name}]")
    obj = sections[section]
    hints = get_type_hints(type(obj))
    if field not in hints:
        known = ", ".join(sorted(hints))
        raise UserError(f"{where}: unknown setting {name}; known in [{section}]: {known}")
    if not isinstance(spec, dict):
        raise UserError(f"{where}: [{name}] must be a table with low/high or choices")
    unknown = set(spec) - {"low", "high", "log", "step", "choices"}
    if unknown:
        raise UserError(f"{where}: [{name}] has unknown keys {sorted(unknown)}")
    hint = hints[field]
    base_type = next((a for a in get_args(hint) if a is not type(None)), hint)
    if "choices" in spec:
        choices = spec["choices"]
        if not isinstance(choices, list) or not choices:
            raise UserError(f"{where}: [{name}] choices must be a non-empty list")
        param = Param(name, "categorical", choices=tuple(_choice(c) for c in choices))
        values = list(param.choices)
    elif {"low", "high"} <= set(spec):
        low, high = spec["low"], spec["high"]
        numeric = base_type in (int, float) and get_origin(base_type) is None
        if not numeric:
            raise UserError(f"{where}: [{name}] is not a number; give choices instead")
        if not low < high:
            raise UserError(f"{where}: [{name}] needs low < high, got {low} and {high}")
        if spec.get("log") and low <= 0:
            raise UserError(f"{where}: [{name}] log = true needs low > 0, got {low}")
        kind = "int" if base_type is int else "float"
        param = Param(name, kind, float(low), float(high), bool(spec.get("log")), spec.get("step"))
        values = [int(low) if kind == "int" else low, int(high) if kind == "int" else high]
    else:
        raise UserError(f"{where}: [{name}] needs low and high, or choices")
    for value in values:  # every bound and choice must make a valid config on its own
        try:
            apply_overrides(base, overrides({name: value}), where)
        except ValueError as err:
            raise UserError(f"{where}: [{name}] value {value!r} is not valid: {err}") from None
    return param


def load_space(path: Path | None, base: Config) -> list[Param]:
    """The space in the TOML file `path` (None: `BUILTIN`), checked against `base`."""
    if path is None:
        return [_param(name, spec, base, "built-in space") for name, spec in BUILTIN.items()]
    try:
        with open(path, "rb") as fh:
            tables = tomllib.load(fh)
    except FileNotFoundError:
        raise UserError(f"--space: file not found: {path}") from None
    except tomllib.TOMLDecodeError as err:
        raise UserError(f"--space: {path} is not valid TOML: {err}") from None
    params = []
    for section, fields in tables.items():
        if not isinstance(fields, dict) or not fields:
            raise UserError(f"--space {path}: [{section}] holds no [{section}.field] tables")
        for field, spec in fields.items():
            params.append(_param(f"{section}.{field}", spec, base, f"--space {path}"))
    if not params:
        raise UserError(f"--space {path}: no parameters to search")
    return params
