"""`Trainer`: the epoch loop around the named steps of `loop.Loop`.

It strings together, per epoch: positioning the training data (after a resume), the
training windows, validation, the scheduler step, the selection metric and early
stopping, the best and `last` checkpoints (through a `CheckpointManager`), and the
hooks that receive the metrics. `train()` in `src/modelling/train.py` is its documented
front door; callers who want the history use `Trainer(...).fit(...)`, which returns a
`TrainResult`.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import math
import signal
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from src.config import TrainConfig
from src.core.constants import DEFAULT_CHECKPOINT
from src.core.logs import ensure_console
from src.modelling.checkpointing.best import plain_state_dict, unwrap
from src.modelling.checkpointing.fingerprint import train_fingerprint
from src.modelling.checkpointing.manager import CheckpointManager
from src.modelling.checkpointing.rng import capture_rng, restore_rng
from src.modelling.evaluation.metrics import is_better
from src.modelling.observability.console import ConsoleHooks
from src.modelling.observability.hooks import Hooks
from src.modelling.training.distributed import World
from src.modelling.training.faults import Faults
from src.modelling.training.loop import Loop, loader_length
from src.modelling.training.precision import make_precision
from src.modelling.training.signals import RunInterrupted, stop_on_signals
from src.modelling.training.state import LoopState, TrainingError, TrainResult, WindowResult

log = logging.getLogger(__name__)


def resolve_world(rank: int | None, world_size: int | None) -> World:
    """The explicit rank/world size, else torchrun's environment (a single process: 0 of 1)."""
    env = World.from_env()
    world = World(
        rank=env.rank if rank is None else rank,
        world_size=env.world_size if world_size is None else world_size,
        local_rank=env.local_rank,
        local_world_size=env.local_world_size,
    )
    if world.distributed and not torch.distributed.is_initialized():
        raise TrainingError(
            f"world size {world.world_size} but no process group: launch with torchrun "
            "(saimp train does this) or call torch.distributed.init_process_group"
        )
    return world


def _dataset_of(loader: Any) -> Any:
    return getattr(loader, "dataset", loader)


def _data_position(loader: Any, epoch: int, batches_done: int) -> dict[str, Any] | None:
    """The streaming dataset's resumable position (None for a plain iterable)."""
    dataset = _dataset_of(loader)
    if not hasattr(dataset, "state_dict"):
        return None
    return {**dataset.state_dict(), "epoch": epoch, "batches": batches_done}


def _position_batches(
    loader: Iterable[Any], epoch: int, batches_done: int, saved: dict[str, Any] | None
) -> Iterator[Any]:
    """An iterator over `loader` for `epoch`, past its first `batches_done` batches.

    A streaming dataset with `load_state_dict` jumps there without reading the consumed
    data; any other iterable is read and the consumed batches dropped.
    """
    dataset = _dataset_of(loader)
    if hasattr(dataset, "set_epoch"):
        dataset.set_epoch(epoch)
    if batches_done and hasattr(dataset, "load_state_dict"):
        dataset.load_state_dict(saved or {"epoch": epoch, "batches": batches_done})
        return iter(loader)
    return itertools.islice(iter(loader), batches_done, None)


def pick_micro_batch(micro_batch: str, train_dl: Any, accumulation_steps: int) -> int | None:
    """Samples per forward pass: "loader" (None: the loader's batches), a number, or "auto".

    "auto" runs the whole window as one pass (the biggest speed-up on a CPU, where
    memory is plentiful for these models); on CUDA an out-of-memory error halves it.
    A loader that does not say its `batch_size` keeps its own batches.
    """
    if micro_batch == "loader":
        return None
    if micro_batch == "auto":
        batch_size = getattr(_dataset_of(train_dl), "batch_size", None)
        return batch_size * accumulation_steps if batch_size else None
    value = int(micro_batch)
    if value < 1:
        raise ValueError(f"micro_batch must be >= 1, 'auto' or 'loader', got {micro_batch!r}")
    return value


class Trainer:
    """One training run: model, loss, optimizer and scheduler, plus three typed groups.

    `config` (`TrainConfig`): accumulation, precision, selection metric, early stopping,
    gradient clipping, non-finite tolerance, micro-batch, logging interval (its
    `epochs`, `batch_size`, `lr`, ... are for `saimp train`, which builds the optimizer
    and loaders; `train()` is given those built). `checkpoints`: a `CheckpointManager`,
    or the best checkpoint's path (then `last` beside it every
    `config.checkpoint_every_windows` windows). `hooks`: receive the metrics (default:
    the console lines of docs/design.md on rank 0). `world`: this process's rank in the
    job (default: torchrun's environment, see `resolve_world`); with more than one rank
    the model is wrapped in `DistributedDataParallel` and only rank 0 writes files.
    """

    def __init__(
        self,
        model: nn.Module,
        loss: nn.Module,
        optimizer: torch.optim.Optimizer,
        scheduler: Any = None,
        *,
        config: TrainConfig | None = None,
        checkpoints: CheckpointManager | Path | str | None = None,
        hooks: Hooks | None = None,
        device: torch.device | str | None = None,
        world: World | None = None,
    ) -> None:
        self.config = cfg = config if config is not None else TrainConfig()
        self.world = world if world is not None else resolve_world(None, None)
        if device is None:
            cuda = torch.cuda.is_available()
            device = torch.device("cuda", self.world.local_rank) if cuda else "cpu"
        self.device = torch.device(device)
        if isinstance(checkpoints, CheckpointManager):
            self.checkpoints = checkpoints
        else:
            self.checkpoints = CheckpointManager(
                DEFAULT_CHECKPOINT if checkpoints is None else checkpoints,
                fingerprint=train_fingerprint(cfg),
                every_windows=cfg.checkpoint_every_windows,
            )
        self.checkpoints.is_writer = self.world.is_main
        if not self.world.is_main:
            hooks = Hooks()
        elif hooks is None:
            ensure_console(self.world.rank)
            hooks = ConsoleHooks(self.device)
        self.hooks = hooks
        self.model, self.scheduler = model.to(self.device), scheduler
        if isinstance(loss, nn.Module):
            loss.to(self.device)
        wrapped = model
        if self.world.distributed and not isinstance(model, DistributedDataParallel):
            ids = [self.device.index] if self.device.type == "cuda" else None
            wrapped = DistributedDataParallel(model, device_ids=ids)
        self.loop = Loop(
            wrapped,
            loss,
            optimizer,
            accumulation_steps=cfg.accumulation_steps,
            precision=make_precision(cfg.precision, self.device),
            device=self.device,
            world=self.world,
            hooks=hooks,
            max_grad_norm=cfg.max_grad_norm,
            max_nonfinite_windows=cfg.max_nonfinite_windows,
            log_every=cfg.log_every,
            faults=Faults.from_env(),
        )
        self._train_dl: Iterable[Any] | None = None
        self._resumed_position: dict[str, Any] | None = None

    @property
    def state(self) -> LoopState:
        return self.loop.state

    # -- the run ---------------------------------------------------------------------------
    def fit(
        self,
        train_dl: Iterable[Any],
        val_dl: Iterable[Any],
        num_epochs: int,
        *,
        resume: Path | str | None = None,
    ) -> TrainResult:
        """Train for `num_epochs` (counted over the whole run, a resumed one included).

        `resume`: "auto" (continue from `last` if it exists) or a path. Raises
        `RunInterrupted` after SIGINT/SIGTERM (with `last` written), `TrainingError` when
        the run cannot go on or validation was never finite (nothing good is lost).
        """
        if num_epochs < 1:
            raise ValueError(f"num_epochs must be >= 1, got {num_epochs}")
        if resume is None or not self.resume(resume):
            self.checkpoints.keep_earlier_last()
        st = self.state
        if st.micro_batch is None:
            st.micro_batch = pick_micro_batch(
                self.config.micro_batch, train_dl, self.config.accumulation_steps
            )
            if st.micro_batch is not None:
                log.info(f"[SETUP] {st.micro_batch} samples per forward pass")
        self.loop.optimizer.zero_grad(set_to_none=True)
        with stop_on_signals(self.loop):
            self._epochs(train_dl, val_dl, num_epochs)
        if st.best_epoch is None:
            raise TrainingError(
                f"no epoch had a finite training and validation loss (and a finite "
                f"{self.config.select_metric}), so no best checkpoint was written; lower "
                "--lr, set --max-grad-norm, or check the data for NaN/inf"
            )
        kept = self.checkpoints.kept_message
        if kept:
            log.warning(kept)
        return TrainResult(self.checkpoints.result_path, self.checkpoints.last_path, st)

    def _epochs(self, train_dl: Iterable[Any], val_dl: Iterable[Any], num_epochs: int) -> None:
        loop, st, hooks = self.loop, self.state, self.hooks
        self._train_dl = train_dl
        while st.epoch < num_epochs and not st.stopped_early:
            epoch = st.epoch + 1
            if st.batches_done == 0:
                st.start_epoch()
            hooks.epoch_start(epoch, num_epochs, loader_length(train_dl))
            hooks.phase_start("train", loader_length(train_dl))
            started = time.perf_counter() - st.epoch_seconds
            batches = _position_batches(train_dl, epoch, st.batches_done, self._resumed_position)
            self._resumed_position = None
            try:
                loop.train_epoch(batches, epoch, on_window=self._after_window)
            finally:
                st.epoch_seconds = time.perf_counter() - started
            self._end_epoch(epoch, loop.evaluate(val_dl))

    def _after_window(self, result: WindowResult) -> None:
        if result.stop_requested:
            signum = self.loop.stop_signal or signal.SIGTERM
            log.info(
                f"[STOP] {signal.Signals(signum).name} received: finished the current step, "
                f"writing {self.checkpoints.last_path}"
            )
            self.save_last()
            raise RunInterrupted(signum, self.checkpoints.last_path)
        if self.checkpoints.last_due(self.state.windows_done):
            self.save_last()

    def _end_epoch(self, epoch: int, val: dict[str, Any]) -> None:
        loop, st, cfg = self.loop, self.state, self.config
        lr_used = loop.lr
        if isinstance(self.scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            self.scheduler.step(val["val_loss"])
        elif self.scheduler is not None:
            self.scheduler.step()
        loss_sum, norm, correct, samples = st.epoch_sums
        train_loss = loss_sum / loop.window_loss.window_normaliser(norm) if norm else math.nan
        # A non-finite loss means the model failed, whatever the selection metric says: a
        # diverged model can keep a finite macro-F1 while its loss is NaN.
        finite = math.isfinite(train_loss) and math.isfinite(val["val_loss"])
        improved = finite and is_better(cfg.select_metric, val[cfg.select_metric], st.best_metric)
        if not finite:
            log.warning(
                f"epoch {epoch}: non-finite loss (train {train_loss:.4g}, validation "
                f"{val['val_loss']:.4g}); this epoch cannot become the best model"
            )
        if improved:
            st.best_metric, st.best_epoch, st.bad_epochs = val[cfg.select_metric], epoch, 0
        else:
            st.bad_epochs += 1
        record = {
            "epoch": epoch,
            "train_loss": train_loss,
            "train_acc": correct / samples if samples else 0.0,
            **val,
            "lr": lr_used,
            "next_lr": loop.lr,
            "optimizer_steps": st.optimizer_steps,
            "skipped_steps": st.skipped_steps - st.epoch_start_counts[0],
            "nonfinite_windows": st.nonfinite_windows - st.epoch_start_counts[1],
            "train_samples": int(samples),
            "seconds": st.epoch_seconds,
            "improved": improved,
        }
        st.history.append(record)
        st.epoch, st.batches_done = epoch, 0
        if improved:
            self.save_best(record)
        patience = cfg.early_stopping_patience
        if patience is not None and st.bad_epochs >= patience:
            st.stopped_early = True
        self.save_last()
        self.hooks.epoch_end(record)
        if st.stopped_early:
            log.info(
                f"[STOP] early stopping: {cfg.select_metric} has not improved for "
                f"{st.bad_epochs} epochs (best {st.best_metric:.4f} at epoch {st.best_epoch})"
            )

    # -- checkpoints -----------------------------------------------------------------------
    def save_best(self, record: dict[str, Any]) -> None:
        metric = self.config.select_metric
        metrics = {k: v for k, v in record.items() if k != "val_confusion"}
        path = self.checkpoints.save_best(self.model, record["epoch"], metric, metrics)
        log.info(f"   [CKPT] {metric} improved to {record[metric]:.4f}: saved {path}")
        self.hooks.checkpoint_saved(path, record)

    def save_last(self) -> None:
        """Write the full training state (rank 0; the others hold identical state)."""
        if not self.world.is_main:
            return  # skip building the state too, not only the write
        loop = self.loop
        self.checkpoints.save_last(
            {
                "model": plain_state_dict(self.model),
                "optimizer": loop.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
                "scaler": loop.scaler.state_dict(),
                "loop": dataclasses.asdict(loop.state),
                "rng": capture_rng(),
                "data": _data_position(
                    self._train_dl, loop.state.epoch + 1, loop.state.batches_done
                ),
            },
            during_write=loop.faults.maybe_kill_in_save,
        )

    def resume(self, resume: Path | str) -> bool:
        """Load the `last` state ("auto": if there is one) into model, optimizer, loop;
        False when "auto" found none (a new run)."""
        found = self.checkpoints.load_last(resume)
        if found is None:
            return False
        payload, source = found
        loop = self.loop
        unwrap(loop.model).load_state_dict(payload["model"])
        loop.optimizer.load_state_dict(payload["optimizer"])
        if self.scheduler is not None and payload["scheduler"] is not None:
            self.scheduler.load_state_dict(payload["scheduler"])
        loop.scaler.load_state_dict(payload["scaler"])
        loop.state = LoopState(**payload["loop"])
        restore_rng(payload["rng"])
        self._resumed_position = payload.get("data")
        st = loop.state
        where = (
            f"epoch {st.epoch + 1}, batch {st.batches_done}"
            if st.batches_done
            else f"the end of epoch {st.epoch}"
        )
        log.info(f"[RESUME] continuing from {source} at {where}")
        self.hooks.history_restored([dict(r) for r in st.history])
        return True
