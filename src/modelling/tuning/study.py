"""The study: an Optuna study in a database any process can join or continue.

Resumable and reproducible:
- a trial records its host and process id; a rerun on the same host marks the trials
  of dead processes as failed at once, and Optuna's heartbeat (every `HEARTBEAT_S`)
  marks those of other hosts failed after `GRACE_S`; failed trials are not counted, so a
  killed trial is run again;
- the sampler of the k-th trial that is not failed is seeded with `seed + k`, so a rerun
  draws the same parameters for the same trial as an uninterrupted study would (TPE
  sees the same finished trials); with parallel jobs the order of trials, and so the
  draws, depend on timing.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Callable
from typing import Any

from src.core.errors import UserError

log = logging.getLogger(__name__)

HEARTBEAT_S = 10
GRACE_S = 30
FINISHED = ("COMPLETE", "PRUNED")


def make_pruner(name: str, epochs: int) -> Any:
    """ "median" (Optuna's `MedianPruner` after 2 trials), "hyperband", or "none"."""
    import optuna

    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=0)
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=max(epochs, 1))
    if name == "none":
        return optuna.pruners.NopPruner()
    raise UserError(f"--pruner must be median, hyperband or none, got {name!r}")


def open_storage(url: str) -> Any:
    import optuna

    try:
        return optuna.storages.RDBStorage(url, heartbeat_interval=HEARTBEAT_S, grace_period=GRACE_S)
    except Exception as err:  # SQLAlchemy raises many kinds; the URL is the user's
        raise UserError(f"--storage: cannot open {url}: {str(err).splitlines()[0]}") from None


def load(storage: Any, name: str, direction: str, pruner: Any, seed: int) -> Any:
    """The study `name` (created if missing) with a sampler seeded for its next trial."""
    import optuna

    study = optuna.create_study(
        storage=storage, study_name=name, direction=direction, load_if_exists=True, pruner=pruner
    )
    if study.direction.name.lower() != direction:
        raise UserError(
            f"--study {name} already exists to {study.direction.name.lower()} its objective; "
            f"this search would {direction} it: use another --study or the same --objective"
        )
    k = sum(1 for t in study.get_trials(deepcopy=False) if t.state.name != "FAIL")
    sampler = optuna.samplers.TPESampler(seed=seed + k, n_startup_trials=10)
    return optuna.load_study(study_name=name, storage=storage, sampler=sampler, pruner=pruner)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def fail_dead_trials(study: Any) -> int:
    """Mark as failed the running trials of processes on this host that no longer exist."""
    from optuna.trial import TrialState

    host, failed = socket.gethostname(), 0
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if t.user_attrs.get("host") == host and not _alive(int(t.user_attrs.get("pid", -1))):
            study._storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
            failed += 1
    if failed:
        log.info(f"[TUNE] {failed} trial(s) of a stopped process marked failed; they run again")
    return failed


def counts(study: Any) -> dict[str, int]:
    """Trials by state name (COMPLETE, PRUNED, RUNNING, FAIL, WAITING)."""
    out: dict[str, int] = {}
    for t in study.get_trials(deepcopy=False):
        out[t.state.name] = out.get(t.state.name, 0) + 1
    return out


def finished(study: Any) -> int:
    c = counts(study)
    return sum(c.get(s, 0) for s in FINISHED)


def run_trials(
    open_study: Callable[[], Any],
    quota: int,
    objective: Callable[[Any], float],
    max_failures: int = 5,
) -> None:
    """Run `quota` trials to the end (complete or pruned), one at a time.

    `open_study()` reloads the study with its sampler seeded for the next trial. A trial
    whose sampled settings are refused (`UserError`) is marked failed and drawn again, at
    most `max_failures` times in a row. Any other error marks the trial failed and ends
    the search (a rerun continues it).
    """
    done = failures = 0
    ended: list[Any] = []  # the trial each optimize() call ran, as its callback saw it
    refused: list[str] = []  # why the settings of a failed trial were refused
    while done < quota:
        study = open_study()
        ended.clear()

        def tagged(trial: Any) -> float:
            trial.set_user_attr("host", socket.gethostname())
            trial.set_user_attr("pid", os.getpid())
            try:
                return objective(trial)
            except UserError as err:
                refused.append(str(err))
                raise

        study.optimize(
            tagged,
            n_trials=1,
            catch=(UserError,),
            callbacks=[lambda _study, frozen: ended.append(frozen)],
            gc_after_trial=True,
        )
        if ended and ended[-1].state.name == "FAIL":
            failures += 1
            log.warning(
                f"[TUNE] trial {ended[-1].number} failed: {refused[-1] if refused else '?'}"
            )
            if failures >= max_failures:
                raise UserError(
                    f"{failures} trials in a row drew settings the config refuses "
                    f"({refused[-1] if refused else 'see the log'}); narrow --space"
                )
            continue
        failures = 0
        done += 1
