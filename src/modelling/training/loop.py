"""The named steps of the training loop: a window of micro-batches, an epoch, validation.

`trainer.Trainer` strings these together with checkpoints, the scheduler, early
stopping and resume. Everything here works the same for one process and for
many: each collective is a no-op for a world of one.
"""

from __future__ import annotations

import gc
import itertools
import logging
import math
from collections.abc import Iterable, Iterator
from contextlib import nullcontext
from typing import Any

import numpy as np
import torch
from torch import nn

from src.core.constants import CLASS_NAMES, NUM_CLASSES
from src.modelling.evaluation import metrics
from src.modelling.observability.hooks import Hooks
from src.modelling.training.distributed import World, all_reduce_sum
from src.modelling.training.exact_loss import WindowLoss
from src.modelling.training.faults import Faults
from src.modelling.training.precision import Precision
from src.modelling.training.state import LoopState, TrainingError, WindowResult

log = logging.getLogger(__name__)


class Loop:
    """The pieces of one `train()` call and its named steps."""

    def __init__(
        self,
        model: nn.Module,
        loss: Any,
        optimizer: torch.optim.Optimizer,
        *,
        accumulation_steps: int,
        precision: Precision,
        device: torch.device,
        world: World,
        hooks: Hooks,
        max_grad_norm: float | None,
        max_nonfinite_windows: int,
        log_every: int,
        faults: Faults | None = None,
    ) -> None:
        self.window_loss = WindowLoss(loss)
        self.model = model
        self.optimizer = optimizer
        self.accumulation_steps = accumulation_steps
        self.precision = precision
        self.scaler = precision.make_scaler()
        self.device = device
        self.world = world
        self.hooks = hooks
        self.max_grad_norm = max_grad_norm
        self.max_nonfinite_windows = max_nonfinite_windows
        self.log_every = log_every
        self.faults = faults or Faults()
        self.state = LoopState()
        self.stop_signal: int | None = None

    # -- helpers -------------------------------------------------------------------------
    def _reduce(self, values: list[float]) -> list[float]:
        # NCCL only moves CUDA tensors, gloo only CPU ones; one process needs no tensor.
        if not self.world.distributed:
            return values
        device = self.device if self.device.type == "cuda" else torch.device("cpu")
        t = torch.tensor(values, dtype=torch.float64, device=device)
        return all_reduce_sum(t, self.world).tolist()

    @property
    def lr(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])

    def _chunks(self, micro_batches: list[Any]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """The window's samples cut into forward passes of `state.micro_batch` samples.

        With no micro-batch set, the loader's batches are used as they come (no copy).
        Re-cutting never changes the loss being differentiated: a sum over samples divided
        by the window's normaliser, and the model has no batch-dependent layers. Without
        dropout (or with `dropout=0`) the gradient is therefore the same for every cut, up
        to float rounding. With dropout, each forward pass draws its masks from the RNG in
        turn, so another cut gives other masks: the gradient is then the same only in
        expectation over the masks, not sample by sample.
        """
        size = self.state.micro_batch
        batches = [(b[0], b[1]) for b in micro_batches]
        # Already cut that way: every batch holds `size` samples, the last at most that.
        if size is None or (
            all(len(y) == size for _, y in batches[:-1]) and len(batches[-1][1]) <= size
        ):
            return batches
        x = torch.cat([b[0] for b in batches])
        y = torch.cat([b[1] for b in batches])
        return list(zip(x.split(size), y.split(size), strict=True))

    # -- steps ---------------------------------------------------------------------------
    def train_window(
        self, micro_batches: list[Any], first_batch_idx: int, epoch: int
    ) -> WindowResult | None:
        """Forward/backward every micro-batch of one window, then one optimizer step.

        Returns None when some rank has no data left: every rank then ends the epoch at
        the same window, so an uneven loader can never hang the all-reduce.
        """
        # The normaliser comes from the labels alone, read on the host before any
        # transfer, so finding it costs no device synchronisation.
        local_norm = sum(float(self.window_loss.normaliser(b[1])) for b in micro_batches)
        has_data, total_norm = self._reduce([1.0 if micro_batches else 0.0, local_norm])
        if has_data < self.world.world_size:
            return None
        self.state.windows_done += 1
        norm = self.window_loss.window_normaliser(total_norm)
        if norm <= 0:  # every label ignored: nothing to learn from this window
            return WindowResult(0.0, 0.0, 0, 0)
        while True:
            try:
                loss_sum, correct, samples, oom = self._forward_backward(micro_batches, norm)
            except torch.OutOfMemoryError as err:
                if self.world.distributed:  # inside the synchronised pass: cannot retry
                    raise TrainingError(
                        f"out of memory at epoch {epoch}, batch {first_batch_idx} in the "
                        "synchronising pass; resume from the last checkpoint with a smaller "
                        "--batch-size (the effective batch can stay the same)"
                    ) from err
                self._back_off(micro_batches, epoch, first_batch_idx)
                continue
            loss_sum, correct, samples, stop, oom = self._reduce(
                [loss_sum, correct, samples, 1.0 if self.stop_signal else 0.0, oom]
            )
            if oom == 0:
                break
            self._back_off(micro_batches, epoch, first_batch_idx)  # every rank, together

        self._optimizer_step(loss_sum, first_batch_idx, epoch)
        result = WindowResult(loss_sum, total_norm, int(correct), int(samples), stop > 0)
        self._log_window(result, norm, first_batch_idx, len(micro_batches), epoch)
        return result

    def _forward_backward(
        self, micro_batches: list[Any], norm: float
    ) -> tuple[float, int, int, float]:
        """Backpropagate sum-of-losses x world_size / norm for each forward pass.

        DDP averages gradients over ranks, so that scale makes the average equal the
        gradient of one batch holding the whole window of every rank. Under DDP only the
        last pass synchronises. A rank that runs out of memory in an earlier pass skips
        to the last one (so the collectives still pair up) and reports it in the fourth
        value; the ranks then agree to retry the window with smaller passes.
        """
        scale = self.world.world_size / norm
        chunks = self._chunks(micro_batches)
        loss_sum = torch.zeros((), dtype=torch.float64, device=self.device)
        correct = torch.zeros((), dtype=torch.int64, device=self.device)
        samples, oom = 0, 0.0
        for i, (x_cpu, y_cpu) in enumerate(chunks):
            last = i == len(chunks) - 1
            if oom and not last:
                continue
            sync = nullcontext() if last or not self.world.distributed else self.model.no_sync()
            try:
                with sync:
                    if i == 0:
                        self.faults.maybe_oom(self.state.windows_done)
                    x = x_cpu.to(self.device, non_blocking=True)
                    y = y_cpu.to(self.device, non_blocking=True)
                    with self.precision.autocast():
                        logits = self.model(x)  # (B, n_classes)
                    batch_sum = self.window_loss.sum_loss(logits, y)
                    self.scaler.scale(batch_sum * scale).backward()
                    if i == 0:
                        self.faults.maybe_kill_in_window(self.state.windows_done)
            except torch.OutOfMemoryError:
                if last or not self.world.distributed:
                    raise
                oom = 1.0
                continue
            loss_sum += batch_sum.detach()
            correct += (logits.detach().argmax(dim=1) == y).sum()
            samples += len(y)
        return float(loss_sum), int(correct), samples, oom

    def _back_off(self, micro_batches: list[Any], epoch: int, first_batch_idx: int) -> None:
        """After an out-of-memory error: free memory, halve the forward pass, retry."""
        self.optimizer.zero_grad(set_to_none=True)
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
        current = max(len(c[1]) for c in self._chunks(micro_batches))
        if current <= 1:
            raise TrainingError(
                f"out of memory at epoch {epoch}, batch {first_batch_idx} even with a "
                "micro-batch of 1 sample; use a smaller model (--model-size, --set "
                "model.d_model=...) or a shorter --seq-len"
            )
        self.state.micro_batch = current // 2
        log.info(
            f"   [OOM] epoch {epoch}, batch {first_batch_idx}: out of memory with "
            f"{current} samples per forward pass; retrying the window with "
            f"{self.state.micro_batch} (same effective batch and gradient)"
        )

    def _optimizer_step(self, loss_sum: float, first_batch_idx: int, epoch: int) -> bool:
        """Step unless the window's loss is not finite (all ranks see the same sum)."""
        st = self.state
        if not math.isfinite(loss_sum):
            self.optimizer.zero_grad(set_to_none=True)
            st.nonfinite_windows += 1
            st.consecutive_nonfinite += 1
            log.info(
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
            log.info(
                f"   [AMP] epoch {epoch}, batch {first_batch_idx}: inf/nan gradients, step "
                f"skipped; loss scale now {self.scaler.get_scale():g}"
            )
            return False
        st.optimizer_steps += 1
        return True

    def _log_window(
        self, r: WindowResult, norm: float, first_batch_idx: int, n_batches: int, epoch: int
    ) -> None:
        loss = r.loss_sum / norm if norm else float("nan")
        acc = r.correct / max(r.samples, 1)
        # A line for each batch index that is a multiple of log_every in this window,
        # with the window's exact (weighted-mean) loss.
        offset = -first_batch_idx % self.log_every
        if offset < n_batches:
            self.hooks.batch(
                epoch,
                first_batch_idx + offset,
                loss,
                acc,
                lr=self.lr,
                skipped_steps=self.state.skipped_steps,
                step=self.state.optimizer_steps,
            )
        self.hooks.progress(
            "train",
            first_batch_idx + n_batches,
            r.samples // self.world.world_size,
            loss=loss,
            acc=acc,
            lr=self.lr,
        )

    def train_epoch(self, batches: Iterator[Any], epoch: int, on_window: Any = None) -> None:
        """Train over `batches` (already positioned), updating `state.epoch_sums`.

        `on_window()` runs after each window (for periodic checkpoints); it returns
        nothing and may raise to stop the run.
        """
        self.model.train()
        st = self.state
        while True:
            micro = list(itertools.islice(batches, self.accumulation_steps))
            result = self.train_window(micro, st.batches_done, epoch)
            if result is None:
                break
            if math.isfinite(result.loss_sum):  # a skipped window is counted apart
                for i, value in enumerate(
                    (result.loss_sum, result.normaliser, result.correct, result.samples)
                ):
                    st.epoch_sums[i] += value
            st.batches_done += len(micro)
            if on_window is not None:
                on_window(result)
        if st.batches_done == 0:
            raise TrainingError("the training loader yielded no batches; check the data split")

    @torch.no_grad()
    def evaluate(self, val_dl: Iterable[Any]) -> dict[str, Any]:
        """Loss, accuracy and confusion matrix over the whole split, summed over ranks."""
        self.model.eval()
        loss_sum = torch.zeros((), dtype=torch.float64, device=self.device)
        norm = 0.0
        cm = torch.zeros(NUM_CLASSES * NUM_CLASSES, dtype=torch.int64, device=self.device)
        self.hooks.phase_start("val", loader_length(val_dl))
        for i, batch in enumerate(val_dl):
            norm += float(self.window_loss.normaliser(batch[1]))
            x = batch[0].to(self.device, non_blocking=True)
            y = batch[1].to(self.device, non_blocking=True)
            with self.precision.autocast():
                logits = self.model(x)
            loss_sum += self.window_loss.sum_loss(logits, y)
            cm += torch.bincount(y * NUM_CLASSES + logits.argmax(dim=1), minlength=cm.numel())
            self.hooks.progress("val", i + 1, len(y))
        reduced = self._reduce([float(loss_sum), norm, *cm.cpu().tolist()])
        loss_total, norm = reduced[0], reduced[1]
        confusion = np.asarray(reduced[2:], dtype=np.int64).reshape(NUM_CLASSES, NUM_CLASSES)
        if confusion.sum() == 0:
            raise TrainingError("the validation loader yielded no batches; check the data split")
        recall = metrics.per_class(confusion)["recall"]
        divisor = self.window_loss.window_normaliser(norm)
        return {
            "val_loss": loss_total / divisor if divisor else math.nan,
            "val_acc": metrics.accuracy(confusion),
            "val_macro_f1": metrics.macro_f1(confusion),
            "val_balanced_acc": metrics.balanced_accuracy(confusion),
            "val_recall": {name: float(r) for name, r in zip(CLASS_NAMES, recall, strict=True)},
            "val_confusion": confusion.tolist(),
        }


def loader_length(loader: Any) -> int | None:
    """Batches per epoch when the loader knows it (the streaming loader does), else None."""
    try:
        return len(loader)
    except TypeError:
        return None
