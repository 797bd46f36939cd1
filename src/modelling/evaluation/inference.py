"""A trained model back from its files, and its predictions over batches (no files written).

`load_model` rebuilds SAIMP from a best checkpoint and its JSON sidecar (weights read
with `weights_only=True`); `eval_config` and `split_bounds_of` rebuild the data settings
and the split the training run used, so a checkpoint is always judged on its own split.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from src.config import Config, DataConfig, TrainConfig
from src.modelling.checkpointing.atomic import CheckpointError, safe_load
from src.modelling.checkpointing.best import (
    as_state_dict,
    load_sidecar,
    load_weights,
    sidecar_path,
)
from src.modelling.checkpointing.last import FORMAT as TRAIN_STATE_FORMAT
from src.modelling.model import SAIMP, SAIMPConfig


@dataclass
class Predictions:
    """Labels, logits and argmax predictions of a split, in stream (chronological) order."""

    y_true: np.ndarray
    """int8 (N,)"""
    y_pred: np.ndarray
    """int8 (N,): the argmax of the model's logits (no calibration, no decision rule)"""
    loss_sum: float = 0.0
    """Sum over samples of weight[y] * cross-entropy."""
    weight_sum: float = 0.0
    """Sum over samples of weight[y] (the normaliser of a weighted mean)."""
    logits: np.ndarray | None = None
    """float32 (N, n_classes): the model's logits, what calibration starts from"""

    @property
    def loss(self) -> float:
        return self.loss_sum / self.weight_sum if self.weight_sum else math.nan


def _weights_and_sidecar(checkpoint: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """A best checkpoint's weights and JSON sidecar, or the same from a `last` state file."""
    obj = safe_load(checkpoint)
    if isinstance(obj, dict) and obj.get("format") == TRAIN_STATE_FORMAT:
        sidecar = obj.get("sidecar")
        if not isinstance(sidecar, dict) or not sidecar:
            raise CheckpointError(
                f"--checkpoint: {checkpoint} is a resumable training state from before states "
                "carried their sidecar; evaluate the best checkpoint beside it instead"
            )
        return obj["model"], sidecar
    return as_state_dict(obj, checkpoint), load_sidecar(checkpoint)


def load_model(checkpoint: Path) -> tuple[SAIMP, dict[str, Any]]:
    """The model with the checkpoint's weights (eval mode, CPU) and its sidecar.

    `checkpoint`: a best checkpoint (`.pth` with its `.json` sidecar beside it) or a
    resumable `last` state (its weights and sidecar are inside). Raises
    `CheckpointError` naming the file and what is wrong.
    """
    checkpoint = Path(checkpoint)
    if checkpoint.is_dir():
        raise CheckpointError(
            f"--checkpoint: {checkpoint} is a directory; pass the .pth file inside it"
        )
    if not checkpoint.is_file():
        raise CheckpointError(
            f"--checkpoint: {checkpoint} not found; train first (saimp train) "
            "or pass the path of a best checkpoint"
        )
    state, sidecar = _weights_and_sidecar(checkpoint)
    for key in ("model", "normalizer", "split"):
        if not isinstance(sidecar.get(key), dict):
            raise CheckpointError(
                f"{sidecar_path(checkpoint)} has no {key!r} section; evaluate a checkpoint "
                "written by saimp train"
            )
    try:
        cfg = SAIMPConfig(**sidecar["model"])
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"{sidecar_path(checkpoint)}: bad model config: {err}") from None
    model = SAIMP(cfg)
    load_weights(model, state, f"{checkpoint} does not fit the model its sidecar describes")
    return model.eval(), sidecar


def split_bounds_of(sidecar: dict[str, Any], where: Path) -> Any:
    from src.data.split import SplitBounds

    s = sidecar["split"]
    try:
        return SplitBounds(
            val_start_ms=int(s["val_start_ms"]),
            test_start_ms=int(s["test_start_ms"]),
            embargo_ms=int(s.get("embargo_ms") or 0),
            train_start_ms=None if s.get("train_start_ms") is None else int(s["train_start_ms"]),
        )
    except (KeyError, TypeError, ValueError) as err:
        raise CheckpointError(f"{where}: malformed 'split' section ({err})") from None


def eval_config(sidecar: dict[str, Any], data_dir: Path, batch_size: int, bounds: Any) -> Config:
    """A Config that makes `build_data` read `data_dir` with the training run's split."""
    from src.data.split import iso

    trained = (sidecar.get("config") or {}).get("data", {})
    known = {f.name for f in dataclasses.fields(DataConfig)}
    data_fields = {k: v for k, v in trained.items() if k in known}
    data_fields.update(
        seq_len=int(sidecar["model"]["seq_len"]),
        val_start=iso(bounds.val_start_ms),
        test_start=iso(bounds.test_start_ms),
        num_workers=0,
    )
    try:
        data = DataConfig(**data_fields)
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"the sidecar's data settings are not usable: {err}") from None
    cfg = Config(data=data, train=TrainConfig(batch_size=batch_size))
    cfg.paths.data_dir = Path(data_dir)
    return cfg


@torch.no_grad()
def predict(
    model: torch.nn.Module,
    batches: Iterable[Any],
    *,
    device: torch.device | str = "cpu",
    class_weights: Iterable[float] | None = None,
    tick: Callable[[], Any] | None = None,
) -> Predictions:
    """Run `model` over `(x, y, ...)` batches: logits (float32, as `saimp predict` gets
    them), argmax predictions and the class-weighted loss. `tick` is called before each
    batch (a `ThreadGovernor`'s, to share the CPU cores with other processes)."""
    device = torch.device(device)
    model = model.to(device).eval()
    weight = (
        torch.tensor(list(class_weights), dtype=torch.float32)
        if class_weights is not None
        else None
    )
    ys: list[np.ndarray] = []
    ps: list[np.ndarray] = []
    zs: list[np.ndarray] = []
    loss_sum = weight_sum = 0.0
    for batch in batches:
        if tick is not None:
            tick()
        x, y = batch[0].to(device, non_blocking=True), batch[1].to(torch.int64)
        logits = model(x).float().cpu()  # (B, n_classes)
        ys.append(y.numpy().astype(np.int8))
        ps.append(logits.argmax(dim=1).numpy().astype(np.int8))
        zs.append(logits.numpy())
        if weight is not None:
            loss_sum += float(F.cross_entropy(logits, y, weight=weight, reduction="sum"))
            weight_sum += float(weight[y].sum())
    empty = np.empty(0, np.int8)
    return Predictions(
        np.concatenate(ys) if ys else empty,
        np.concatenate(ps) if ps else empty,
        loss_sum,
        weight_sum,
        np.concatenate(zs) if zs else np.empty((0, 0), np.float32),
    )


@dataclass
class SplitData:
    """A split of a lake read as a checkpoint's training run read it (`open_split`)."""

    data: Any
    """`src.data.dataloader.Data` with only `split` built, in fixed (stream) order"""
    data_dir: Path
    bounds: Any
    """the checkpoint's `SplitBounds`"""


def open_split(
    checkpoint: Path,
    model: SAIMP,
    sidecar: dict[str, Any],
    *,
    data_dir: Path | str | None,
    split: str,
    batch_size: int,
    command: str = "evaluate",
) -> SplitData:
    """The checkpoint's `split` of `data_dir` (default: the lake the run trained on),
    with the run's split bounds, normalisation and windows, streamed in fixed order.

    Raises `UserError`s naming `--data-dir` (no lake named, a lake whose bar interval,
    labels or features differ from the checkpoint's; `command` is what the advice says
    to do on the right lake) and `DataError`s of the loader (an empty split, ...).
    """
    from src.core.errors import DataError, UserError
    from src.data.dataloader import build_data
    from src.data.lake import scan_lake_for
    from src.data.normalize import Normalizer
    from src.modelling.checkpointing.sidecar import lake_mismatch

    bounds = split_bounds_of(sidecar, sidecar_path(checkpoint))
    if data_dir is None:
        data_dir = (sidecar.get("config") or {}).get("paths", {}).get("data_dir")
        if data_dir is None:
            raise UserError(
                "--data-dir: the sidecar does not name the training lake; pass --data-dir DIR"
            )
    data_dir = Path(data_dir)
    normalizer = Normalizer.from_dict(sidecar["normalizer"])
    cfg = eval_config(sidecar, data_dir, batch_size, bounds)
    try:
        # The lake against the checkpoint first, before a loader fails on what differs
        # (a scan reads no feature column: milliseconds per 100k rows).
        mismatch = lake_mismatch(sidecar, scan_lake_for(cfg.data, data_dir), command)
        if mismatch is None:
            data = build_data(cfg, splits=(split,), normalizer=normalizer)
    except DataError as err:
        raise DataError(f"{err} [split bounds from {sidecar_path(checkpoint)}]") from None
    if mismatch:
        raise DataError(mismatch)
    if (data.bounds.val_start_ms, data.bounds.test_start_ms) != (
        bounds.val_start_ms,
        bounds.test_start_ms,
    ):  # the ISO round trip must be exact; never evaluate on a shifted split
        raise RuntimeError(f"split bounds {data.bounds} differ from the checkpoint's {bounds}")
    if data.index.num_features != model.cfg.n_features:
        raise DataError(
            f"{data_dir}: {data.index.num_features} features per bar, the checkpoint expects "
            f"{model.cfg.n_features}; {command} on a lake prepared with the same features"
        )
    # Fixed, chronological order for every split (train is built shuffled for training):
    # the chance level shifts predictions along time, and calibration cross-fits on
    # contiguous blocks of the stream.
    getattr(data, split).shuffle = False
    return SplitData(data, data_dir, bounds)
