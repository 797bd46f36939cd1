"""What a finished search leaves in `--out`: `best.toml` (the best trial's config, which
`saimp train --config` accepts), `trials.csv`, Optuna's matplotlib plots, and the number
of trials in the best model's sidecar (a deflated Sharpe ratio needs it).
"""

from __future__ import annotations

import csv
import json
import logging
from dataclasses import replace
from pathlib import Path
from typing import Any

from src.config import Config, apply_overrides
from src.modelling.checkpointing.atomic import atomic_save_json, atomic_write
from src.modelling.checkpointing.best import sidecar_path
from src.modelling.labels import config_toml
from src.modelling.tuning.space import overrides

log = logging.getLogger(__name__)


def best_config(base: Config, params: dict[str, Any], metric: str) -> Config:
    """The base settings with the best trial's parameters (the user's own paths kept)."""
    cfg = apply_overrides(base, overrides(params), "best trial")
    return replace(cfg, train=replace(cfg.train, select_metric=metric))


def write_trials_csv(study: Any, path: Path) -> Path:
    """One row per trial: number, state, value, epochs reported, seconds, parameters."""
    trials = study.get_trials(deepcopy=False)
    names = sorted({k for t in trials for k in t.params})
    rows = [["number", "state", "value", "epochs", "seconds", *names]]
    for t in trials:
        seconds = (
            (t.datetime_complete - t.datetime_start).total_seconds()
            if t.datetime_complete and t.datetime_start
            else ""
        )
        value = "" if t.value is None else t.value
        row = [t.number, t.state.name, value, len(t.intermediate_values), seconds]
        rows.append([*row, *(t.params.get(n, "") for n in names)])

    text = _csv_text(rows)
    atomic_write(path, lambda fh: fh.write(text.encode()))
    return path


def _csv_text(rows: list[list[Any]]) -> str:
    import io

    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows(rows)
    return buf.getvalue()


def write_plots(study: Any, out: Path) -> list[Path]:
    """Optuna's optimisation history and parameter importances, as PNG files."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import optuna.visualization.matplotlib as ovm

    written = []
    for name, draw in (
        ("history.png", ovm.plot_optimization_history),
        ("importances.png", ovm.plot_param_importances),
    ):
        try:
            ax = draw(study)
        except (ValueError, RuntimeError) as err:  # e.g. too few complete trials
            log.info(f"[TUNE] no {name}: {err}")
            continue
        fig = ax.figure if hasattr(ax, "figure") else ax.flat[0].figure
        fig.tight_layout()
        fig.savefig(out / name, dpi=100)
        plt.close(fig)
        written.append(out / name)
    return written


def record_in_sidecar(checkpoint: Path, tuning: dict[str, Any]) -> None:
    """Add `tuning` (study, trials run, ...) to a best checkpoint's JSON sidecar."""
    path = sidecar_path(checkpoint)
    sidecar = json.loads(path.read_text())
    sidecar["tuning"] = tuning
    atomic_save_json(sidecar, path)


def write_best_toml(cfg: Config, path: Path, header: str) -> Path:
    """`header` as comments, then `cfg` as TOML for `saimp train --config` (its labels are
    not set there: each run reads them from its lake)."""
    body = config_toml(cfg, from_lake=False)
    text = "".join(f"# {line}\n" for line in header.splitlines()) + "\n" + body
    atomic_write(path, lambda fh: fh.write(text.encode()))
    return path
