"""Model, loss, optimizer and scheduler built from config (no I/O)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from src.config import Config
from src.modelling.model import SAIMP, SAIMPConfig


def model_config(cfg: Config, n_features: int) -> SAIMPConfig:
    m = cfg.model
    return SAIMPConfig(
        n_features=n_features,
        seq_len=cfg.data.seq_len,
        d_model=m.d_model,
        n_heads=m.n_heads,
        n_layers=m.n_layers,
        d_ff=m.d_ff,
        dropout=m.dropout,
        encoder=m.encoder,
        levels=m.levels,
    )


def build_model(cfg: Config, n_features: int) -> SAIMP:
    torch.manual_seed(cfg.train.seed)  # the same initial weights on every rank
    return SAIMP(model_config(cfg, n_features))


def build_loss(cfg: Config, class_weights: Sequence[float] | None = None) -> nn.CrossEntropyLoss:
    """Class-weighted cross entropy (by default missing a SuperLong costs 20 times a Neutro).

    `class_weights`: the resolved weights (`class_weights.resolve_class_weights`);
    default `cfg.train.class_weights`, which must then be numbers: "balanced" needs the
    training split's counts, so it raises `ValueError` here.
    """
    weights = cfg.train.class_weights if class_weights is None else class_weights
    if isinstance(weights, str):
        raise ValueError(
            f"train.class_weights {weights!r} must be resolved from the training split first "
            "(class_weights.resolve_class_weights)"
        )
    return nn.CrossEntropyLoss(
        weight=torch.tensor(list(weights), dtype=torch.float32),
        label_smoothing=cfg.train.label_smoothing,
    )


def build_optimizer(cfg: Config, model: nn.Module) -> torch.optim.AdamW:
    """AdamW with the fused kernel where torch has one for every parameter's device.

    The default on CPU is a Python loop over tensors: about 1 ms per step for the
    benchmark model, against 0.2 ms fused (bench/README.md), most of the optimizer's
    share of a small window. Fused and looped AdamW agree to float rounding, not bitwise.
    """
    fusable = all(
        p.device.type in ("cpu", "cuda") and p.is_floating_point() for p in model.parameters()
    )
    return torch.optim.AdamW(
        model.parameters(),
        lr=cfg.train.lr,
        weight_decay=cfg.train.weight_decay,
        fused=True if fusable else None,
    )


def build_scheduler(
    cfg: Config, optimizer: torch.optim.Optimizer
) -> torch.optim.lr_scheduler.ReduceLROnPlateau:
    return torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer, mode="min", factor=cfg.train.plateau_factor, patience=cfg.train.plateau_patience
    )
