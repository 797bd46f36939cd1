"""The training loop of SAIMP: `train(...) -> Path`, and `python -m src.modelling.train`.

`train()` owns autocast, exact gradient accumulation, DDP, validation, the best
checkpoint, the `last` checkpoint and resume, the scheduler step on validation loss,
early stopping, signals and logging. The command-line entry point (`main`) only builds
those pieces from config and calls it.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import signal
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, nullcontext
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from src.core.constants import DEFAULT_CHECKPOINT
from src.modelling.checkpoint import plain_state_dict, save_best, unwrap
from src.modelling.distributed import World, all_gather_objects
from src.modelling.faults import Faults
from src.modelling.loop import Loop, LoopState, TrainingError, WindowResult, loader_length
from src.modelling.precision import make_precision
from src.modelling.reporting import ConsoleLogger, NullLogger
from src.modelling.train_state import (
    capture_rng,
    fingerprint_difference,
    last_path_for,
    load_training_state,
    previous_path,
    restore_rng,
    save_training_state,
)

__all__ = ["LoopState", "RunInterrupted", "TrainingError", "main", "train"]

SIGNAL_EXIT_CODES = {signal.SIGINT: 130, signal.SIGTERM: 143}


class RunInterrupted(Exception):
    """SIGINT/SIGTERM arrived; the `last` checkpoint was written at a window boundary."""

    def __init__(self, signum: int, last_path: Path) -> None:
        super().__init__(f"interrupted by {signal.Signals(signum).name}")
        self.signum = signum
        self.last_path = last_path

    @property
    def exit_code(self) -> int:
        return SIGNAL_EXIT_CODES.get(self.signum, 128 + self.signum)


def _better(metric_name: str, value: float, best: float | None) -> bool:
    if not math.isfinite(value):
        return False
    if best is None:
        return True
    return value > best if metric_name == "val_macro_f1" else value < best


def _resolve_world(rank: int | None, world_size: int | None) -> World:
    env = World.from_env()
    world = World(
        rank=env.rank if rank is None else rank,
        world_size=env.world_size if world_size is None else world_size,
        local_rank=env.local_rank,
    )
    if world.distributed and not torch.distributed.is_initialized():
        raise TrainingError(
            f"world size {world.world_size} but no process group: launch with torchrun "
            "(python -m src.modelling.train does this) or call torch.distributed.init_process_group"
        )
    return world


def _default_device(world: World) -> torch.device:
    if torch.cuda.is_available():
        return torch.device("cuda", world.local_rank)
    return torch.device("cpu")


def _wrap_ddp(model: nn.Module, world: World, device: torch.device) -> nn.Module:
    if not world.distributed or isinstance(model, DistributedDataParallel):
        return model
    device_ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=device_ids)


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


@contextmanager
def _stop_on_signals(loop: Loop):
    """SIGINT/SIGTERM ask the loop to stop after the current optimizer step.

    A second SIGINT interrupts at once (the usual Ctrl-C twice).
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def request_stop(signum: int, frame: Any) -> None:
        if loop.stop_signal == signal.SIGINT and signum == signal.SIGINT:
            raise KeyboardInterrupt
        loop.stop_signal = signum
        loop.logger.info(
            f"[STOP] {signal.Signals(signum).name} received: finishing the current step"
        )

    previous = {s: signal.signal(s, request_stop) for s in SIGNAL_EXIT_CODES}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def train(
    model: nn.Module,
    loss: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    train_dl: Iterable[Any],
    val_dl: Iterable[Any],
    num_epochs: int,
    *,
    accumulation_steps: int = 1,
    precision: str = "auto",
    device: torch.device | str | None = None,
    checkpoint_path: Path | str = DEFAULT_CHECKPOINT,
    early_stopping_patience: int | None = None,
    max_grad_norm: float | None = None,
    max_nonfinite_windows: int = 5,
    select_metric: str = "val_loss",
    log_every: int = 100,
    micro_batch: int | str | None = None,
    rank: int | None = None,
    world_size: int | None = None,
    logger: NullLogger | None = None,
    sidecar: dict[str, Any] | None = None,
    state: LoopState | None = None,
    resume: Path | str | None = None,
    last_checkpoint_path: Path | str | None = None,
    checkpoint_every_windows: int | None = None,
    fingerprint: dict[str, Any] | None = None,
) -> Path:
    """Train `model` and return the path of its best checkpoint.

    Each epoch trains over `train_dl` in windows of `accumulation_steps` micro-batches
    (the epoch's last window may be shorter), validates over `val_dl` without
    gradients, writes the model's `state_dict` to `checkpoint_path` (and a JSON
    sidecar: `sidecar` plus epoch and metrics) when `select_metric` improves, steps
    `scheduler` (`ReduceLROnPlateau` on validation loss; any other once per epoch), and
    stops early after `early_stopping_patience` epochs without improvement.

    Gradient accumulation is exact: each window's gradient equals that of one batch
    holding all of its samples, for `CrossEntropyLoss`/`NLLLoss` with reduction "mean"
    or "sum" (class weights, `ignore_index` and label smoothing included) and for any
    loss offering `sum_loss(logits, target)` and `normaliser(target)`; other losses
    are rejected with `UnsupportedLossError`. Under DDP the normaliser is global, so
    the gradient also equals that of one process holding every rank's window. Hence
    `micro_batch` (samples per forward pass) is free: None uses the loader's batches,
    an int re-cuts each window into passes of that size, "auto" takes the whole window
    in one pass where memory allows. An out-of-memory error halves it and retries the
    window (same gradient).

    `precision`: "fp32", "bf16" (autocast, no scaler), "fp16" (autocast and
    `GradScaler`) or "auto" (bf16 where the device supports it, else fp16 on CUDA,
    else fp32). `rank`/`world_size` default to torchrun's environment (a single
    process is rank 0 of 1); with more than one rank the model is wrapped in
    `DistributedDataParallel` and only rank 0 writes files and logs.

    A `last` checkpoint (`last_checkpoint_path`, default `saimp_last.pth` beside the
    best) holds the full training state; it is written after every epoch and every
    `checkpoint_every_windows` windows, and on SIGINT/SIGTERM (after the current
    optimizer step; then `RunInterrupted` is raised). `resume` ("auto" or a path)
    continues from it exactly; `fingerprint` (settings that change the result) must
    then match the one saved.

    Batches are `(x, y, ...)` tuples: x (B, T, F) float, y (B,) int64 class indices.
    Pass a `LoopState` as `state` to read the per-epoch history afterwards.
    """
    if num_epochs < 1 or accumulation_steps < 1:
        raise ValueError("num_epochs and accumulation_steps must be >= 1")
    if select_metric not in ("val_loss", "val_macro_f1"):
        raise ValueError(f"select_metric must be val_loss or val_macro_f1, got {select_metric!r}")
    world = _resolve_world(rank, world_size)
    device = torch.device(device) if device is not None else _default_device(world)
    checkpoint_path = Path(checkpoint_path)
    last_path = Path(last_checkpoint_path or last_path_for(checkpoint_path))
    if logger is None or not world.is_main:
        logger = ConsoleLogger(device) if world.is_main else NullLogger()

    model.to(device)
    if isinstance(loss, nn.Module):
        loss.to(device)
    loop = Loop(
        _wrap_ddp(model, world, device),
        loss,
        optimizer,
        accumulation_steps=accumulation_steps,
        precision=make_precision(precision, device),
        device=device,
        world=world,
        logger=logger,
        max_grad_norm=max_grad_norm,
        max_nonfinite_windows=max_nonfinite_windows,
        log_every=log_every,
        faults=Faults.from_env(),
    )
    if state is not None:
        loop.state = state
    run = _Run(
        loop,
        scheduler,
        model,
        checkpoint_path,
        last_path,
        world,
        logger,
        sidecar,
        fingerprint,
        select_metric,
        checkpoint_every_windows,
    )
    if resume is not None:
        run.resume(resume)
        if state is not None:  # the caller's object holds the resumed progress too
            vars(state).update(vars(loop.state))
            loop.state = state
    if loop.state.micro_batch is None and micro_batch is not None:
        loop.state.micro_batch = _pick_micro_batch(micro_batch, train_dl, accumulation_steps)
        if loop.state.micro_batch is not None:
            logger.info(f"[SETUP] {loop.state.micro_batch} samples per forward pass")
    optimizer.zero_grad(set_to_none=True)
    with _stop_on_signals(loop):
        run.epochs(train_dl, val_dl, num_epochs, early_stopping_patience)
    st = loop.state
    if st.best_epoch is None:
        raise TrainingError(
            f"validation {select_metric} was never finite, so no checkpoint was written"
        )
    return checkpoint_path


def _pick_micro_batch(
    micro_batch: int | str, train_dl: Iterable[Any], accumulation_steps: int
) -> int | None:
    """Samples per forward pass: a pinned int, or "auto": the whole window.

    On a CPU memory is plentiful for these models, so "auto" runs the window as one
    batch (the biggest speed-up); on CUDA an out-of-memory error halves it at once.
    """
    if micro_batch == "auto":
        batch_size = getattr(_dataset_of(train_dl), "batch_size", None)
        return batch_size * accumulation_steps if batch_size else None
    value = int(micro_batch)
    if value < 1:
        raise ValueError(f"micro_batch must be >= 1 or 'auto', got {micro_batch!r}")
    return value


class _Run:
    """Epoch orchestration, checkpoints and resume around one `Loop`."""

    def __init__(
        self,
        loop: Loop,
        scheduler: Any,
        model: nn.Module,
        best_path: Path,
        last_path: Path,
        world: World,
        logger: NullLogger,
        sidecar: dict[str, Any] | None,
        fingerprint: dict[str, Any] | None,
        select_metric: str,
        checkpoint_every_windows: int | None,
    ) -> None:
        self.loop, self.scheduler, self.model = loop, scheduler, model
        self.best_path, self.last_path = best_path, last_path
        self.world, self.logger = world, logger
        self.sidecar, self.fingerprint = sidecar or {}, fingerprint or {}
        self.select_metric = select_metric
        self.checkpoint_every_windows = checkpoint_every_windows
        self.train_dl: Iterable[Any] | None = None
        self.resumed_data_position: dict[str, Any] | None = None

    # -- checkpoints ---------------------------------------------------------------------
    def save_last(self) -> None:
        """Write the full training state (rank 0; the others hold identical state)."""
        if not self.world.is_main:
            return
        loop = self.loop
        save_training_state(
            self.last_path,
            {
                "model": plain_state_dict(self.model),
                "optimizer": loop.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
                "scaler": loop.scaler.state_dict(),
                "loop": dataclasses.asdict(loop.state),
                "rng": capture_rng(),
                "data": _data_position(
                    self.train_dl, loop.state.epoch + 1, loop.state.batches_done
                ),
                "fingerprint": self.fingerprint,
            },
            during_write=loop.faults.maybe_kill_in_save,
        )

    def save_best(self, record: dict[str, Any]) -> None:
        if not self.world.is_main:
            return
        metrics = {k: v for k, v in record.items() if k != "val_confusion"}
        save_best(
            self.model,
            self.best_path,
            {
                **self.sidecar,
                "epoch": record["epoch"],
                "select_metric": self.select_metric,
                "metrics": metrics,
            },
        )
        value = record[self.select_metric]
        self.logger.info(
            f"   [CKPT] {self.select_metric} improved to {value:.4f}: saved {self.best_path}"
        )
        self.logger.checkpoint_saved(self.best_path, record)

    def resume(self, resume: Path | str) -> None:
        """Load the `last` state ("auto": if there is one) into model, optimizer, loop."""
        path = self.last_path if str(resume) == "auto" else Path(resume)
        if str(resume) == "auto" and not (path.exists() or previous_path(path).exists()):
            self.logger.info(f"[RESUME] no {path} yet: starting a new run")
            return
        payload, source = load_training_state(path)
        differences = fingerprint_difference(payload.get("fingerprint", {}), self.fingerprint)
        if differences:
            raise TrainingError(
                f"cannot resume from {source}: settings that change the result differ ("
                + "; ".join(differences)
                + "); start a new run or restore those settings"
            )
        loop = self.loop
        unwrap(loop.model).load_state_dict(payload["model"])
        loop.optimizer.load_state_dict(payload["optimizer"])
        if self.scheduler is not None and payload["scheduler"] is not None:
            self.scheduler.load_state_dict(payload["scheduler"])
        loop.scaler.load_state_dict(payload["scaler"])
        loop.state = LoopState(**payload["loop"])
        restore_rng(payload["rng"])
        self.resumed_data_position = payload.get("data")
        st = loop.state
        where = (
            f"epoch {st.epoch + 1}, batch {st.batches_done}"
            if st.batches_done
            else (f"the end of epoch {st.epoch}")
        )
        self.logger.info(f"[RESUME] continuing from {source} at {where}")
        self.logger.history_restored([dict(r) for r in st.history])

    # -- epochs --------------------------------------------------------------------------
    def after_window(self, result: WindowResult) -> None:
        st = self.loop.state
        every = self.checkpoint_every_windows
        if result.stop_requested:
            self.save_last()
            raise RunInterrupted(self.loop.stop_signal or signal.SIGTERM, self.last_path)
        if every and st.windows_done % every == 0:
            self.save_last()

    def epochs(
        self,
        train_dl: Iterable[Any],
        val_dl: Iterable[Any],
        num_epochs: int,
        patience: int | None,
    ) -> None:
        loop, st, logger = self.loop, self.loop.state, self.logger
        self.train_dl = train_dl
        while st.epoch < num_epochs and not st.stopped_early:
            epoch = st.epoch + 1
            if st.batches_done == 0:
                st.start_epoch()
            logger.epoch_start(epoch, num_epochs, loader_length(train_dl))
            logger.phase_start("train", loader_length(train_dl))
            started = time.perf_counter() - st.epoch_seconds
            batches = _position_batches(
                train_dl, epoch, st.batches_done, self.resumed_data_position
            )
            self.resumed_data_position = None
            try:
                loop.train_epoch(batches, epoch, on_window=self.after_window)
            finally:
                st.epoch_seconds = time.perf_counter() - started
            val = loop.evaluate(val_dl)
            self.end_epoch(epoch, val, patience)

    def end_epoch(self, epoch: int, val: dict[str, Any], patience: int | None) -> None:
        loop, st = self.loop, self.loop.state
        lr_used = loop.lr
        if isinstance(self.scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            self.scheduler.step(val["val_loss"])
        elif self.scheduler is not None:
            self.scheduler.step()
        improved = _better(self.select_metric, val[self.select_metric], st.best_metric)
        if improved:
            st.best_metric, st.best_epoch, st.bad_epochs = val[self.select_metric], epoch, 0
        else:
            st.bad_epochs += 1
        loss_sum, norm, correct, samples = st.epoch_sums
        record = {
            "epoch": epoch,
            "train_loss": loss_sum / loop.window_loss.window_normaliser(norm) if norm else math.nan,
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
        if patience is not None and st.bad_epochs >= patience:
            st.stopped_early = True
        self.save_last()
        self.logger.epoch_end(record)
        if st.stopped_early:
            self.logger.info(
                f"[STOP] early stopping: {self.select_metric} has not improved for "
                f"{st.bad_epochs} epochs (best {st.best_metric:.4f} at epoch {st.best_epoch})"
            )


# -- command line ------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    """`python -m src.modelling.train`: config, logs, process group, data, then `train()`."""
    from src.modelling.cli import build_parser, config_from_args

    args = build_parser().parse_args(argv)
    cfg = config_from_args(args)

    from src.modelling.distributed import destroy_process_group, device_for, init_process_group

    world = World.from_env()
    device = device_for(world)
    init_process_group(world, device)
    finished = False
    try:
        code = _run(cfg, world, device, args.resume)
        finished = True
        return code
    except RunInterrupted as stop:
        return stop.exit_code
    finally:
        destroy_process_group(finished)


def _run(cfg: Any, world: World, device: torch.device, resume: str | None) -> int:
    from src.data.dataloader import build_data
    from src.modelling import build
    from src.modelling.default_data import ensure_default_data
    from src.modelling.model import count_parameters
    from src.modelling.run_files import RunPaths, TeeOutput, make_run_logger
    from src.modelling.run_header import result_fingerprint, run_header, sidecar_for

    paths = RunPaths.in_dir(cfg.paths.logs_dir)
    with TeeOutput(paths.log) if world.is_main else nullcontext():
        # First, so that a tracker whose extra is missing stops the run before any data work.
        logger = make_run_logger(cfg, paths, device, is_main=world.is_main)
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
            model = build.build_model(cfg, data.index.num_features)
            optimizer = build.build_optimizer(cfg, model)
            precision = make_precision(t.precision, device).mode
            logger.info(run_header(cfg, data, model, device, precision, world, paths))
            logger.log_params(
                {
                    "run.device": str(device),
                    "run.precision": precision,
                    "run.world_size": world.world_size,
                    "run.effective_batch": t.batch_size * t.accumulation_steps * world.world_size,
                    "model.parameters": count_parameters(model),
                }
            )
            best = train(
                model,
                build.build_loss(cfg),
                optimizer,
                build.build_scheduler(cfg, optimizer),
                data.train_dl,
                data.val_dl,
                t.epochs,
                accumulation_steps=t.accumulation_steps,
                precision=precision,
                device=device,
                checkpoint_path=cfg.paths.checkpoint,
                early_stopping_patience=t.early_stopping_patience,
                max_grad_norm=t.max_grad_norm,
                max_nonfinite_windows=t.max_nonfinite_windows,
                select_metric=t.select_metric,
                log_every=t.log_every,
                micro_batch=None if t.micro_batch == "loader" else t.micro_batch,
                rank=world.rank,
                world_size=world.world_size,
                logger=logger,
                sidecar=sidecar_for(cfg, data, model),
                resume=resume,
                checkpoint_every_windows=t.checkpoint_every_windows,
                fingerprint=result_fingerprint(cfg, data),
            )
        except RunInterrupted as stop:
            logger.info(
                f"[STOP] {stop}: the full training state is in {stop.last_path}; continue "
                "with the same command and --resume auto"
            )
            raise
        finally:
            logger.close()
        logger.info(f"[DONE] log {paths.log} | metrics {paths.jsonl} | plot {paths.png}")
        logger.info(str(best))
    return 0


if __name__ == "__main__":
    import sys

    from src.core.errors import run_cli

    sys.exit(run_cli(main))
