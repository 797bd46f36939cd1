"""A trained model back from its files, and its predictions over batches (no files written).

`load_model` rebuilds SAIMP from a best checkpoint and its JSON sidecar (weights read
with `weights_only=True`); `eval_config` and `split_bounds_of` rebuild the data settings
and the split the training run used, so a checkpoint is always judged on its own split.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable
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
    """Labels and argmax predictions of a split, in stream (chronological) order."""

    y_true: np.ndarray
    """int8 (N,)"""
    y_pred: np.ndarray
    """int8 (N,)"""
    loss_sum: float = 0.0
    """Sum over samples of weight[y] * cross-entropy."""
    weight_sum: float = 0.0
    """Sum over samples of weight[y] (the normaliser of a weighted mean)."""

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
            val_start_ms=int(s["val_start_ms"]), test_start_ms=int(s["test_start_ms"])
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
) -> Predictions:
    """Run `model` over `(x, y, ...)` batches: argmax predictions and the weighted loss."""
    device = torch.device(device)
    model = model.to(device).eval()
    weight = (
        torch.tensor(list(class_weights), dtype=torch.float32)
        if class_weights is not None
        else None
    )
    ys: list[np.ndarray] = []
    ps: list[np.ndarray] = []
    loss_sum = weight_sum = 0.0
    for batch in batches:
        x, y = batch[0].to(device, non_blocking=True), batch[1].to(torch.int64)
        logits = model(x).float().cpu()  # (B, n_classes)
        ys.append(y.numpy().astype(np.int8))
        ps.append(logits.argmax(dim=1).numpy().astype(np.int8))
        if weight is not None:
            loss_sum += float(F.cross_entropy(logits, y, weight=weight, reduction="sum"))
            weight_sum += float(weight[y].sum())
    empty = np.empty(0, np.int8)
    return Predictions(
        np.concatenate(ys) if ys else empty,
        np.concatenate(ps) if ps else empty,
        loss_sum,
        weight_sum,
    )
