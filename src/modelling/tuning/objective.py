"""One trial of a search: a normal training run with sampled settings, in its own folder,
reporting its validation metric every epoch and stopping when the pruner says so.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from src.config import Config, apply_overrides
from src.core.errors import UserError
from src.modelling.observability.hooks import Hooks
from src.modelling.training.distributed import World
from src.modelling.training.run import run_training
from src.modelling.tuning.space import Param, overrides

log = logging.getLogger(__name__)


def trial_dir(out: Path, number: int) -> Path:
    return Path(out) / "trials" / f"{number:04d}"


def trial_config(
    base: Config, params: dict[str, Any], out: Path, number: int, metric: str
) -> Config:
    """`base` with the trial's parameters, selecting on the objective metric, writing into
    the trial's own folder (`{out}/trials/{number}`: best.pth, logs/, runs/)."""
    cfg = apply_overrides(base, overrides(params), f"trial {number}")
    here = trial_dir(out, number)
    paths = replace(
        cfg.paths, checkpoint=here / "best.pth", logs_dir=here / "logs", runs_dir=here / "runs"
    )
    return replace(cfg, paths=paths, train=replace(cfg.train, select_metric=metric))


class PruningHooks(Hooks):
    """Reports the objective to the trial after each epoch; raises `TrialPruned` when the
    pruner stops the trial (after that epoch's files are written)."""

    def __init__(self, trial: Any, metric: str) -> None:
        self.trial, self.metric = trial, metric

    def epoch_end(self, record: dict[str, Any]) -> None:
        import optuna

        value = record.get(self.metric)
        if value is None or not math.isfinite(value):
            return  # a non-finite epoch is never reported (and never the trial's best)
        epoch = int(record["epoch"])
        self.trial.report(float(value), epoch)
        if self.trial.should_prune():
            raise optuna.TrialPruned(
                f"trial {self.trial.number} pruned after epoch {epoch} ({self.metric} {value:.4f})"
            )


def run_trial(
    trial: Any,
    space: list[Param],
    base: Config,
    out: Path,
    metric: str,
    device: torch.device,
    setup: Iterable[str] = (),
    governor: Any = None,
) -> float:
    """Draw the trial's parameters, train, and return the best value of `metric`.

    Raises `optuna.TrialPruned` when pruned; a sampled combination the config refuses
    (for example `n_heads` not dividing `d_model`) raises `UserError`.
    """
    params = {p.name: p.suggest(trial) for p in space}
    try:
        cfg = trial_config(base, params, out, trial.number, metric)
    except ValueError as err:
        raise UserError(f"trial {trial.number}: the sampled settings are invalid: {err}") from None
    shown = ", ".join(
        f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items()
    )
    log.info(f"[TUNE] trial {trial.number}: {shown}")
    result = run_training(
        cfg, World(), device, setup=setup, extra_hooks=[PruningHooks(trial, metric)],
        governor=governor,
    )  # fmt: skip
    trial.set_user_attr("checkpoint", str(result.best_checkpoint))
    trial.set_user_attr("epochs", result.state.epoch)
    return float(result.state.best_metric)
