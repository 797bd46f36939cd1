"""One training run from a `Config`: what `saimp train` does between parsing its flags and
printing the best checkpoint, reusable by the commands that train many runs (`tune`).

It probes every output location first, opens the run's log file, builds the hooks (the
console, the JSONL/PNG, trackers, plus any the caller adds), the data, the model, the
optimizer, loss and scheduler, the checkpoint manager (with this run's own best file
under `paths.runs_dir`), and calls `train()`'s `Trainer`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from functools import partial

import torch

from src.config import Config
from src.core.errors import UserError
from src.core.logs import FILE_ONLY, log_file
from src.core.paths import writable_dir, writable_file
from src.core.threads import ThreadGovernor
from src.modelling.checkpointing.manager import CheckpointManager
from src.modelling.observability.hooks import FanoutHooks, Hooks
from src.modelling.training.distributed import World
from src.modelling.training.signals import RunInterrupted
from src.modelling.training.state import TrainResult
from src.modelling.training.trainer import Trainer

log = logging.getLogger(__name__)


class _Governed(Hooks):
    """Lets the thread governor look at the machine after every window and batch."""

    def __init__(self, governor: ThreadGovernor) -> None:
        self.governor = governor

    def progress(self, phase: str, batches_done: int, samples: int, **metrics: float) -> None:
        self.governor.tick()


def run_training(
    cfg: Config,
    world: World,
    device: torch.device,
    *,
    resume: str | None = None,
    setup: Iterable[str] = (),
    extra_hooks: Iterable[Hooks] = (),
    governor: ThreadGovernor | None = None,
    header_on_console: bool = True,
    calibrate: bool = True,
    continue_hint: str = "continue with the same command and --resume auto",
) -> TrainResult:
    """Train as `saimp train` does; return the run's `TrainResult`.

    `setup`: lines for the run's header (e.g. the thread budget); `governor` adapts the
    CPU threads to other processes while the run trains; `header_on_console=False`
    keeps the resolved config and data summary in the log file only (a search's trials).
    `extra_hooks` receive
    the metrics after the run's own hooks (an exception they raise in `epoch_end` ends
    the run after that epoch's files are written: how a pruned trial stops). Raises
    `UserError` before any data work when an output cannot be written, and
    `RunInterrupted` after SIGINT/SIGTERM.

    `calibrate`: after training, rank 0 fits the calibration and decision rule of the
    run's best checkpoint on the validation split and writes them into its sidecar (and
    into the shared best's, when this run's model is there): see
    `prediction/fit_calibration.py`. A failure there is one warning and leaves the
    sidecars as training wrote them.

    The run's labels are the lake's (`cfg.label` is replaced by what its metadata
    records); a training split of a single class is a `UserError`; "balanced" class
    weights are resolved from the training split's counts.
    """
    from src.data.dataloader import build_data
    from src.data.default_data import ensure_default_data
    from src.modelling.checkpointing.fingerprint import result_fingerprint
    from src.modelling.checkpointing.sidecar import sidecar_for
    from src.modelling.labels import with_lake_labels
    from src.modelling.model import count_parameters
    from src.modelling.observability.header import run_header
    from src.modelling.observability.run_files import RunPaths, make_run_hooks
    from src.modelling.training import components
    from src.modelling.training.class_mix import single_class_training, start_warnings
    from src.modelling.training.class_weights import resolve_class_weights
    from src.modelling.training.distributed import all_gather_objects
    from src.modelling.training.precision import resolve_precision

    if world.is_main:  # fail now, not after an epoch, if an output cannot be written
        writable_dir(cfg.paths.logs_dir, "--logs-dir")
        writable_file(cfg.paths.checkpoint, "--checkpoint")
        writable_dir(cfg.paths.runs_dir, "--runs-dir")
    paths = RunPaths.in_dir(cfg.paths.logs_dir)
    with log_file(paths.log if world.is_main else None):
        # First, so that a tracker whose extra is missing stops the run before any data work.
        run_hooks = make_run_hooks(cfg, paths, device, is_main=world.is_main)
        parts = [run_hooks, *extra_hooks]
        hooks = FanoutHooks(parts + ([_Governed(governor)] if governor is not None else []))
        t = cfg.train
        try:
            ensure_default_data(cfg, world)
            data = build_data(
                cfg,
                rank=world.rank,
                world_size=world.world_size,
                pin_memory=device.type == "cuda",
                gather=partial(all_gather_objects, world=world),
            )
            lake = f"--data-dir {cfg.paths.data_dir}"
            # The labels are the lake's: the header, sidecar and fingerprint say so.
            cfg = with_lake_labels(cfg, data.index.meta, lake)
            train_counts = data.index.label_counts("train")
            refusal = single_class_training(train_counts, lake)
            if refusal:  # the same lake index on every rank: every rank stops here
                raise UserError(refusal)
            class_weights = resolve_class_weights(t.class_weights, train_counts)
            model = components.build_model(cfg, data.index.num_features)
            optimizer = components.build_optimizer(cfg, model)
            precision = resolve_precision(t.precision, device)
            header = run_header(cfg, data, model, device, precision, world, paths, class_weights)
            log.info(header, extra=None if header_on_console else FILE_ONLY)
            for line in setup:
                log.info(f"[SETUP] {line}")
            if world.is_main:  # once per run, not once per rank
                for warning in start_warnings(
                    train_counts, class_weights, data.index.label_counts("val")
                ):
                    log.warning(warning)
            hooks.log_params(
                {
                    "run.device": str(device),
                    "run.precision": precision,
                    "run.world_size": world.world_size,
                    "run.effective_batch": t.batch_size * t.accumulation_steps * world.world_size,
                    "run.class_weights": list(class_weights),
                    "model.parameters": count_parameters(model),
                    "label": cfg.label.to_meta(),  # the lake's, as the header shows them
                }
            )
            checkpoints = CheckpointManager(
                cfg.paths.checkpoint,
                sidecar=sidecar_for(cfg, data, model, class_weights),
                fingerprint=result_fingerprint(cfg, data),
                every_windows=t.checkpoint_every_windows,
                run_best=cfg.paths.runs_dir / paths.name / "best.pth",
                replace_best=t.replace_best,
            )
            trainer = Trainer(
                model,
                components.build_loss(cfg, class_weights),
                optimizer,
                components.build_scheduler(cfg, optimizer),
                config=t,
                checkpoints=checkpoints,
                hooks=hooks,
                device=device,
                world=world,
            )
            result = trainer.fit(data.train_dl, data.val_dl, t.epochs, resume=resume)
            if calibrate and world.is_main and result.best_checkpoint.is_file():
                from src.modelling.prediction.fit_calibration import calibrate_after_training

                calibrate_after_training(
                    result.best_checkpoint,
                    [p for p in (checkpoints.run_best, checkpoints.best_path) if p is not None],
                    data_dir=cfg.paths.data_dir,
                    device=device,
                )
        except RunInterrupted as stop:
            log.info(
                f"[STOP] {stop}: the full training state is in {stop.last_path}; {continue_hint}"
            )
            raise
        finally:
            hooks.close()
        log.info(f"[DONE] log {paths.log} | metrics {paths.jsonl} | plot {paths.png}")
    return result
