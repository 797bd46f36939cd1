"""The training loop of SAIMP: `train(...) -> Path`, and `python -m src.modelling.train`.

`train()` owns autocast, exact gradient accumulation, DDP, validation, the best
checkpoint, the scheduler step on validation loss, early stopping and logging. The
command-line entry point (`main`) only builds those pieces from config and calls it.
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Iterable, Iterator
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from src.core.constants import CLASS_NAMES, DEFAULT_CHECKPOINT, NUM_CLASSES
from src.core.errors import UserError
from src.modelling import metrics
from src.modelling.checkpoint import save_best
from src.modelling.distributed import World, all_reduce_sum
from src.modelling.exact_loss import WindowLoss
from src.modelling.precision import Precision, make_precision
from src.modelling.reporting import ConsoleLogger, NullLogger


class TrainingError(UserError):
    """The run cannot go on (persistent non-finite loss, empty loaders); nothing good is lost."""


@dataclass
class LoopState:
    """Everything about the loop's progress that a resumed run needs (beside the tensors)."""

    epoch: int = 0
    """Epochs completed."""
    optimizer_steps: int = 0
    best_metric: float | None = None
    best_epoch: int | None = None
    bad_epochs: int = 0
    """Epochs since the selection metric last improved (early stopping counter)."""
    skipped_steps: int = 0
    """Optimizer steps the fp16 scaler skipped for inf/nan gradients (whole run)."""
    nonfinite_windows: int = 0
    consecutive_nonfinite: int = 0
    stopped_early: bool = False
    history: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class WindowResult:
    """One accumulation window, reduced over ranks."""

    loss_sum: float
    normaliser: float
    correct: int
    samples: int
    stepped: bool


@dataclass
class _Sums:
    """Running sums over batches or windows (exact: divide only when reporting)."""

    loss: float = 0.0
    norm: float = 0.0
    correct: int = 0
    samples: int = 0

    def add(self, loss: float, norm: float, correct: int, samples: int) -> None:
        self.loss += loss
        self.norm += norm
        self.correct += correct
        self.samples += samples

    @property
    def mean_loss(self) -> float:
        return self.loss / self.norm if self.norm else float("nan")

    @property
    def accuracy(self) -> float:
        return self.correct / self.samples if self.samples else 0.0


def _better(metric_name: str, value: float, best: float | None) -> bool:
    if not math.isfinite(value):
        return False
    if best is None:
        return True
    return value > best if metric_name == "val_macro_f1" else value < best


class _Loop:
    """The pieces of one `train()` call and its named steps."""

    def __init__(
        self,
        model: nn.Module,
        loss: nn.Module,
        optimizer: torch.optim.Optimizer,
        scheduler: Any,
        *,
        accumulation_steps: int,
        precision: Precision,
        device: torch.device,
        world: World,
        logger: NullLogger,
        max_grad_norm: float | None,
        max_nonfinite_windows: int,
        log_every: int,
    ) -> None:
        self.window_loss = WindowLoss(loss)
        self.model = model
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.accumulation_steps = accumulation_steps
        self.precision = precision
        self.scaler = precision.make_scaler()
        self.device = device
        self.world = world
        self.logger = logger
        self.max_grad_norm = max_grad_norm
        self.max_nonfinite_windows = max_nonfinite_windows
        self.log_every = log_every
        self.state = LoopState()

    # -- helpers -------------------------------------------------------------------------
    def _to_device(self, batch: Any) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = batch[0], batch[1]
        return x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)

    def _reduce(self, values: list[float]) -> list[float]:
        t = torch.tensor(values, dtype=torch.float64, device=self._collective_device())
        return all_reduce_sum(t, self.world).tolist()

    def _collective_device(self) -> torch.device:
        # NCCL only moves CUDA tensors; gloo only CPU ones.
        return (
            self.device
            if self.device.type == "cuda" and self.world.distributed
            else (torch.device("cpu"))
        )

    # -- steps ---------------------------------------------------------------------------
    def train_window(
        self, micro_batches: list[Any], first_batch_idx: int, epoch: int
    ) -> WindowResult | None:
        """Forward/backward every micro-batch of one window, then one optimizer step.

        Returns None when some rank has no data left: then every rank ends the epoch at
        the same window, so an uneven loader can never hang the all-reduce.
        """
        # The normaliser comes from the labels alone, read on the host before any
        # transfer, so finding it costs no device synchronisation.
        local_norm = sum(float(self.window_loss.normaliser(b[1])) for b in micro_batches)
        has_data, total_norm = self._reduce([1.0 if micro_batches else 0.0, local_norm])
        if has_data < self.world.world_size:
            return None
        norm = self.window_loss.window_normaliser(total_norm)
        if norm <= 0:  # every label ignored: nothing to learn from this window
            return WindowResult(0.0, 0.0, 0, 0, stepped=False)
        # DDP averages gradients over ranks; scaling by world_size / norm makes that
        # average equal the gradient of one batch holding the whole window.
        scale = self.world.world_size / norm

        loss_sum = torch.zeros((), dtype=torch.float64, device=self.device)
        correct = torch.zeros((), dtype=torch.int64, device=self.device)
        samples = 0
        for i, batch in enumerate(micro_batches):
            x, y = self._to_device(batch)
            last = i == len(micro_batches) - 1
            sync = nullcontext() if last or not self.world.distributed else self.model.no_sync()
            with sync:
                with self.precision.autocast():
                    logits = self.model(x)  # (B, n_classes)
                batch_sum = self.window_loss.sum_loss(logits, y)
                self.scaler.scale(batch_sum * scale).backward()
            batch_correct = (logits.detach().argmax(dim=1) == y).sum()
            loss_sum += batch_sum.detach()
            correct += batch_correct
            samples += len(y)
            batch_idx = first_batch_idx + i
            if batch_idx % self.log_every == 0:
                batch_norm = float(self.window_loss.normaliser(batch[1]))
                self.logger.batch(
                    epoch,
                    batch_idx,
                    float(batch_sum.detach()) / batch_norm if batch_norm else float("nan"),
                    int(batch_correct) / max(len(y), 1),
                    samples=len(y),
                )

        local_samples = samples
        loss_sum, correct, samples = self._reduce([float(loss_sum), int(correct), samples])
        stepped = self._optimizer_step(loss_sum, first_batch_idx, epoch)
        self.logger.progress(
            "train",
            first_batch_idx + len(micro_batches),
            local_samples,
            loss=loss_sum / norm,
            acc=correct / max(samples, 1),
            lr=self.lr,
        )
        return WindowResult(loss_sum, total_norm, int(correct), int(samples), stepped)

    def _optimizer_step(self, loss_sum: float, first_batch_idx: int, epoch: int) -> bool:
        """Step unless the window's loss is not finite (all ranks see the same sum)."""
        st = self.state
        if not math.isfinite(loss_sum):
            self.optimizer.zero_grad(set_to_none=True)
            st.nonfinite_windows += 1
            st.consecutive_nonfinite += 1
            self.logger.info(
                f"   [NaN] epoch {epoch}, batch {first_batch_idx}: non-finite loss, step skipped "
                f"({st.consecutive_nonfinite}/{self.max_nonfinite_windows} in a row)"
            )
            if st.consecutive_nonfinite >= self.max_nonfinite_windows:
                raise TrainingError(
                    f"{st.consecutive_nonfinite} consecutive windows had a non-finite loss "
                    f"(last at epoch {epoch}, batch {first_batch_idx}); check the data for "
                    "NaN/inf or lower --lr. The best checkpoint on disk was not touched."
                )
            return False
        st.consecutive_nonfinite = 0
        if self.max_grad_norm is not None:
            self.scaler.unscale_(self.optimizer)  # clip the true gradient, not the scaled one
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.max_grad_norm)
        scale_before = self.scaler.get_scale() if self.scaler.is_enabled() else None
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        if scale_before is not None and self.scaler.get_scale() < scale_before:
            # The scaler found inf/nan gradients and skipped optimizer.step().
            st.skipped_steps += 1
            self.logger.info(
                f"   [AMP] epoch {epoch}, batch {first_batch_idx}: inf/nan gradients, step "
                f"skipped; loss scale now {self.scaler.get_scale():g}"
            )
            return False
        st.optimizer_steps += 1
        return True

    def train_epoch(self, train_dl: Iterable[Any], epoch: int) -> _Sums:
        self.model.train()
        self.logger.phase_start("train", _length(train_dl))
        sums = _Sums()
        it: Iterator[Any] = iter(train_dl)
        batch_idx = 0
        while True:
            micro = list(itertools.islice(it, self.accumulation_steps))
            result = self.train_window(micro, batch_idx, epoch)
            if result is None:
                break
            sums.add(result.loss_sum, result.normaliser, result.correct, result.samples)
            batch_idx += len(micro)
        if sums.samples == 0:
            raise TrainingError("the training loader yielded no batches; check the data split")
        return sums

    @torch.no_grad()
    def evaluate(self, val_dl: Iterable[Any]) -> dict[str, Any]:
        """Loss, accuracy and confusion matrix over the whole split, summed over ranks."""
        self.model.eval()
        loss_sum, norm = 0.0, 0.0
        cm = torch.zeros(NUM_CLASSES * NUM_CLASSES, dtype=torch.float64)
        self.logger.phase_start("val", _length(val_dl))
        for i, batch in enumerate(val_dl):
            x, y = self._to_device(batch)
            with self.precision.autocast():
                logits = self.model(x)
            loss_sum += float(self.window_loss.sum_loss(logits, y))
            norm += float(self.window_loss.normaliser(y))
            idx = (y * NUM_CLASSES + logits.argmax(dim=1)).cpu()
            cm += torch.bincount(idx, minlength=NUM_CLASSES * NUM_CLASSES).double()
            self.logger.progress("val", i + 1, len(y))
        reduced = self._reduce([loss_sum, norm, *cm.tolist()])
        loss_sum, norm = reduced[0], reduced[1]
        confusion = np.asarray(reduced[2:], dtype=np.int64).reshape(NUM_CLASSES, NUM_CLASSES)
        if confusion.sum() == 0:
            raise TrainingError("the validation loader yielded no batches; check the data split")
        recall = metrics.per_class(confusion)["recall"]
        return {
            "val_loss": loss_sum / self.window_loss.window_normaliser(norm) if norm else math.nan,
            "val_acc": metrics.accuracy(confusion),
            "val_macro_f1": metrics.macro_f1(confusion),
            "val_balanced_acc": metrics.balanced_accuracy(confusion),
            "val_recall": {name: float(r) for name, r in zip(CLASS_NAMES, recall, strict=True)},
            "val_confusion": confusion.tolist(),
        }

    def step_scheduler(self, val_loss: float) -> None:
        if self.scheduler is None:
            return
        if isinstance(self.scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            self.scheduler.step(val_loss)
        else:
            self.scheduler.step()

    @property
    def lr(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])


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


def _wrap_ddp(model: nn.Module, world: World, device: torch.device) -> nn.Module:
    if not world.distributed or isinstance(model, DistributedDataParallel):
        return model
    device_ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=device_ids)


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
    rank: int | None = None,
    world_size: int | None = None,
    logger: NullLogger | None = None,
    sidecar: dict[str, Any] | None = None,
    state: LoopState | None = None,
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
    the gradient also equals that of one process holding every rank's window.

    `precision`: "fp32", "bf16" (autocast, no scaler), "fp16" (autocast and
    `GradScaler`) or "auto" (bf16 where the device supports it, else fp16 on CUDA,
    else fp32). `rank`/`world_size` default to torchrun's environment (a single
    process is rank 0 of 1); with more than one rank the model is wrapped in
    `DistributedDataParallel` and only rank 0 writes files and logs.

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
    if logger is None:
        logger = ConsoleLogger(device) if world.is_main else NullLogger()
    elif not world.is_main:
        logger = NullLogger()

    model.to(device)
    if isinstance(loss, nn.Module):
        loss.to(device)
    loop = _Loop(
        _wrap_ddp(model, world, device),
        loss,
        optimizer,
        scheduler,
        accumulation_steps=accumulation_steps,
        precision=make_precision(precision, device),
        device=device,
        world=world,
        logger=logger,
        max_grad_norm=max_grad_norm,
        max_nonfinite_windows=max_nonfinite_windows,
        log_every=log_every,
    )
    if state is not None:
        loop.state = state
    st = loop.state
    optimizer.zero_grad(set_to_none=True)
    while st.epoch < num_epochs and not st.stopped_early:
        epoch = st.epoch + 1
        _set_epoch(train_dl, epoch)
        logger.epoch_start(epoch, num_epochs, _length(train_dl))
        started = time.perf_counter()
        skipped_before, nonfinite_before = st.skipped_steps, st.nonfinite_windows
        sums = loop.train_epoch(train_dl, epoch)
        val = loop.evaluate(val_dl)
        lr_used = loop.lr
        loop.step_scheduler(val["val_loss"])
        improved = _better(select_metric, val[select_metric], st.best_metric)
        if improved:
            st.best_metric, st.best_epoch, st.bad_epochs = val[select_metric], epoch, 0
        else:
            st.bad_epochs += 1
        record = {
            "epoch": epoch,
            "train_loss": sums.mean_loss,
            "train_acc": sums.accuracy,
            **val,
            "lr": lr_used,
            "next_lr": loop.lr,
            "optimizer_steps": st.optimizer_steps,
            "skipped_steps": st.skipped_steps - skipped_before,
            "nonfinite_windows": st.nonfinite_windows - nonfinite_before,
            "train_samples": sums.samples,
            "seconds": time.perf_counter() - started,
            "improved": improved,
        }
        st.history.append(record)
        st.epoch = epoch
        if improved and world.is_main:
            save_best(
                model,
                checkpoint_path,
                {
                    **(sidecar or {}),
                    "epoch": epoch,
                    "select_metric": select_metric,
                    "metrics": {k: v for k, v in record.items() if k != "val_confusion"},
                },
            )
            logger.info(
                f"   [CKPT] {select_metric} improved to {val[select_metric]:.4f}: "
                f"saved {checkpoint_path}"
            )
        logger.epoch_end(record)
        if early_stopping_patience is not None and st.bad_epochs >= early_stopping_patience:
            st.stopped_early = True
            logger.info(
                f"[STOP] early stopping: {select_metric} has not improved for "
                f"{st.bad_epochs} epochs (best {st.best_metric:.4f} at epoch {st.best_epoch})"
            )
    if st.best_epoch is None:
        raise TrainingError(
            f"validation {select_metric} was never finite, so no checkpoint was written"
        )
    return checkpoint_path


def _default_device(world: World) -> torch.device:
    if torch.cuda.is_available():
        return torch.device("cuda", world.local_rank)
    return torch.device("cpu")


def _set_epoch(loader: Any, epoch: int) -> None:
    """Tell a streaming dataset (directly or inside a DataLoader) which epoch starts."""
    target = getattr(loader, "dataset", loader)
    if hasattr(target, "set_epoch"):
        target.set_epoch(epoch)


def _length(loader: Any) -> int | None:
    try:
        return len(loader)
    except TypeError:
        return None


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
    try:
        return _run(cfg, world, device)
    finally:
        destroy_process_group()


def _run(cfg: Any, world: World, device: torch.device) -> int:
    from src.data.dataloader import build_data
    from src.modelling import build
    from src.modelling.default_data import ensure_default_data
    from src.modelling.run_files import RunFilesLogger, RunPaths, TeeOutput
    from src.modelling.run_header import run_header, sidecar_for

    paths = RunPaths.in_dir(cfg.paths.logs_dir)
    with TeeOutput(paths.log) if world.is_main else nullcontext():
        ensure_default_data(cfg, world)
        data = build_data(
            cfg, rank=world.rank, world_size=world.world_size, pin_memory=device.type == "cuda"
        )
        model = build.build_model(cfg, data.index.num_features)
        optimizer = build.build_optimizer(cfg, model)
        logger = RunFilesLogger(paths, device) if world.is_main else NullLogger()
        try:
            precision = make_precision(cfg.train.precision, device).mode
            logger.info(run_header(cfg, data, model, device, precision, world, paths))
            t = cfg.train
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
                rank=world.rank,
                world_size=world.world_size,
                logger=logger,
                sidecar=sidecar_for(cfg, data, model),
            )
        finally:
            logger.close()
        logger.info(f"[DONE] log {paths.log} | metrics {paths.jsonl} | plot {paths.png}")
        logger.info(str(best))
    return 0


if __name__ == "__main__":
    import sys

    from src.core.errors import run_cli

    sys.exit(run_cli(main))
