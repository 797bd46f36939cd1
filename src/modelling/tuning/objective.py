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
from src.modelling.tuning.space import Param, describe, overrides

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


def _pruned(message: str) -> Exception:
    """Optuna's `TrialPruned`, marked as a planned stop for the trial's log file."""
    import optuna

    class TrialStopped(optuna.TrialPruned):
        log_level = logging.INFO

    return TrialStopped(message)


class PruningHooks(Hooks):
    """Reports the objective to the trial after each epoch; raises `TrialPruned` when the
    pruner stops the trial (after that epoch's files are written)."""

    def __init__(self, trial: Any, metric: str) -> None:
        self.trial, self.metric = trial, metric

    def epoch_end(self, record: dict[str, Any]) -> None:
        value = record.get(self.metric)
        if value is None or not math.isfinite(value):
            return  # a non-finite epoch is never reported (and never the trial's best)
        epoch = int(record["epoch"])
        self.trial.report(float(value), epoch)
        if self.trial.should_prune():
            message = (
                f"[TUNE] trial {self.trial.number} pruned after epoch {epoch} "
                f"({self.metric} {value:.4f}, below the pruner's bar)"
            )
            log.info(message)
            raise _pruned(message)


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
    log.info(f"[TUNE] trial {trial.number}: {describe(params)}")
    result = run_training(
        cfg, World(), device, setup=setup, extra_hooks=[PruningHooks(trial, metric)],
        governor=governor, header_on_console=False,
    )  # fmt: skip
    log.info(f"[TUNE] trial {trial.number}: {metric} {result.state.best_metric:.4f}")
    trial.set_user_attr("checkpoint", str(result.best_checkpoint))
    return float(result.state.best_metric)
