"""A run's metrics as records: the JSONL file (and its PNG), and what trackers receive.

`logs/train_run_{YYYYMMDD_HHMMSS}.jsonl` gets one JSON object per line, and `.png` the
curves drawn from the JSONL, redrawn after each epoch (`saimp plot RUN.jsonl` redraws
it too).

JSONL records (NaN and infinities are written as null; `time` is Unix seconds):

- `{"kind": "params", "params": {...}, "time"}`: the resolved config, flattened
  (`"train.lr"`), and facts about the run; written first.
- `{"kind": "step", ...}`, one per logged batch (every `log_every` micro-batches):
  `epoch` (from 1), `batch` (micro-batch index in the epoch), `step` (the x axis of the
  step curves: the global step the loop reports, i.e. optimizer steps done in the run,
  which carry on across a resume; else the micro-batches done since these hooks began),
  `loss` and `acc` (as the loop reports them for that batch), `lr`, `samples_per_s`
  (this process's training throughput in the epoch so far), `ram_gb` (machine RAM in
  use), `vram_gb` (VRAM reserved by torch; null on the CPU), `skipped_steps` (optimizer
  steps the fp16 scaler skipped in the run so far; null when the loop does not report
  it), then any other value the loop passes, then `time`.
- `{"kind": "epoch", ...}`, one per epoch: the loop's epoch record, i.e. `epoch`,
  `train_loss`, `train_acc`, `val_loss`, `val_acc`, `val_macro_f1`, `val_balanced_acc`,
  `val_recall` ({class name: recall}), `val_confusion` (rows: true class, columns:
  predicted), `lr` (used in the epoch), `next_lr` (after the scheduler step),
  `optimizer_steps` (run total), `skipped_steps` and `nonfinite_windows` (in the epoch),
  `train_samples`, `seconds`, `improved` (the best checkpoint was written); then
  `samples_per_s` (training throughput of the epoch), `ram_gb`, `vram_gb`, `time`.

The same records go to the trackers switched on (`trackers.py`).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch

from src.modelling.observability.hooks import Hooks
from src.modelling.observability.memory import Throughput, memory_usage
from src.modelling.observability.plots import plot_history, read_epoch_records
from src.modelling.observability.trackers import RecordSink, flatten_params

STEP_KEYS = (
    "kind",
    "epoch",
    "batch",
    "step",
    "loss",
    "acc",
    "lr",
    "samples_per_s",
    "ram_gb",
    "vram_gb",
    "skipped_steps",
    "time",
)
"""The keys every step record has."""
EPOCH_KEYS = (
    "kind",
    "epoch",
    "train_loss",
    "train_acc",
    "val_loss",
    "val_acc",
    "val_macro_f1",
    "val_balanced_acc",
    "val_recall",
    "val_confusion",
    "lr",
    "next_lr",
    "optimizer_steps",
    "skipped_steps",
    "nonfinite_windows",
    "train_samples",
    "seconds",
    "improved",
    "samples_per_s",
    "ram_gb",
    "vram_gb",
    "time",
)
"""The keys every epoch record has."""


def _finite(value: Any) -> Any:
    """JSON has no NaN: write null instead, so any JSON reader can load the file."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    if hasattr(value, "item") and callable(value.item):  # numpy or torch scalars
        return _finite(value.item())
    return value


def _json_default(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


class JsonlSink(RecordSink):
    """Appends each record as one JSON line; after an epoch record, redraws the PNG from
    the file's epoch records (the file is the one source of the plotted numbers)."""

    def __init__(self, jsonl: Path, png: Path) -> None:
        self.jsonl, self.png = Path(jsonl), Path(png)
        self.jsonl.parent.mkdir(parents=True, exist_ok=True)
        self._fh = open(self.jsonl, "a", buffering=1, encoding="utf-8")  # noqa: SIM115

    def _line(self, record: dict[str, Any]) -> None:
        self._fh.write(json.dumps(record, allow_nan=False, default=_json_default) + "\n")

    def log_params(self, params: dict[str, Any]) -> None:
        self._line({"kind": "params", "params": _finite(params), "time": time.time()})

    def write(self, record: dict[str, Any]) -> None:
        self._line(record)
        if record.get("kind") == "epoch":
            self._fh.flush()
            plot_history(read_epoch_records(self.jsonl), self.png)

    def close(self) -> None:
        self._fh.close()


class MetricsRecorder(Hooks):
    """Turns the loop's hooks into step and epoch records, and hands each to every sink.

    A step record is completed when its window ends (the next `progress("train")`), so it
    carries the window's learning rate and the throughput so far.
    """

    def __init__(self, sinks: Iterable[RecordSink], device: torch.device | None = None) -> None:
        self.sinks = list(sinks)
        self.device = device
        self._pending: dict[str, Any] | None = None
        self._train = Throughput()
        self._train_rate: float | None = None
        self._train_batches = 0
        self._batches_before = 0
        self._lr: float | None = None

    def _emit(self, record: dict[str, Any]) -> None:
        clean = _finite(record)
        for sink in self.sinks:
            sink.write(clean)

    def _flush(self) -> None:
        if self._pending is not None:
            record, self._pending = self._pending, None
            if record["lr"] is None:
                record["lr"] = self._lr
            if record["samples_per_s"] is None:
                record["samples_per_s"] = self._train.per_second
            self._emit(record)

    def log_params(self, params: dict[str, Any]) -> None:
        flat = flatten_params(params)
        for sink in self.sinks:
            sink.log_params(flat)

    def epoch_start(self, epoch: int, num_epochs: int, n_batches: int | None) -> None:
        self._flush()
        self._train_batches = 0
        self._train_rate = None

    def phase_start(self, phase: str, total_batches: int | None) -> None:
        self._flush()
        if phase == "train":
            self._train.start()
        else:
            self._train_rate = self._train.per_second

    def batch(self, epoch: int, batch_idx: int, loss: float, acc: float, **extra: Any) -> None:
        self._flush()
        extra = dict(extra)
        extra.pop("samples", None)
        memory = memory_usage(self.device)
        self._pending = {
            "kind": "step",
            "epoch": epoch,
            "batch": batch_idx,
            "step": extra.pop("step", self._batches_before + batch_idx),
            "loss": loss,
            "acc": acc,
            "lr": extra.pop("lr", None),
            "samples_per_s": None,
            "ram_gb": memory["ram_gb"],
            "vram_gb": memory["vram_gb"],
            "skipped_steps": extra.pop("skipped_steps", None),
            **extra,
            "time": time.time(),
        }

    def progress(self, phase: str, batches_done: int, samples: int, **metrics: float) -> None:
        if phase != "train":
            return
        self._train.add(samples)
        self._train_batches = batches_done
        if metrics.get("lr") is not None:
            self._lr = float(metrics["lr"])
        self._flush()

    def checkpoint_saved(self, path: Path, record: dict[str, Any] | None = None) -> None:
        self._flush()
        for sink in self.sinks:
            sink.checkpoint_saved(Path(path), _finite(record) if record is not None else None)

    def history_restored(self, records: list[dict[str, Any]]) -> None:
        for record in records:
            self._emit({"kind": "epoch", **record, "restored": True})

    def epoch_end(self, record: dict[str, Any]) -> None:
        self._flush()
        self._batches_before += self._train_batches
        memory = memory_usage(self.device)
        rate = self._train_rate if self._train_rate is not None else self._train.per_second
        self._emit(
            {
                "kind": "epoch",
                **record,
                "samples_per_s": rate,
                "ram_gb": memory["ram_gb"],
                "vram_gb": memory["vram_gb"],
                "time": time.time(),
            }
        )

    def close(self) -> None:
        first: BaseException | None = None
        try:
            self._flush()
        except Exception as err:
            first = err
        for sink in self.sinks:  # JSONL first, so trackers can store the complete file
            try:
                sink.close()
            except Exception as err:
                first = first or err
        if first is not None:
            raise first
