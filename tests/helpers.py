"""Small builders shared by the training-loop tests."""

from __future__ import annotations

import torch
from torch import nn

from src.config import TrainConfig
from src.modelling.model import SAIMP, SAIMPConfig
from src.modelling.observability.hooks import Hooks
from src.modelling.train import Trainer, TrainResult
from src.modelling.training.trainer import resolve_world

WEIGHTS = torch.tensor([1.0, 10.0, 10.0, 20.0])
T, F = 6, 5


def tiny_model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return SAIMP(
        SAIMPConfig(n_features=F, seq_len=T, d_model=8, n_heads=2, n_layers=1, d_ff=16, dropout=0.0)
    )


def make_batches(
    labels_per_batch: list[list[int]], seed: int
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    return [
        (torch.randn(len(ys), T, F, generator=g), torch.tensor(ys, dtype=torch.int64))
        for ys in labels_per_batch
    ]


def relative_difference(a: nn.Module, b: nn.Module) -> float:
    va = torch.cat([p.detach().flatten() for p in a.parameters()])
    vb = torch.cat([p.detach().flatten() for p in b.parameters()])
    return float((va - vb).norm() / vb.norm())


def update_difference(a: nn.Module, b: nn.Module, start: nn.Module) -> float:
    """Difference of the two updates relative to the size of the update itself."""
    va, vb, v0 = (torch.cat([p.detach().flatten() for p in m.parameters()]) for m in (a, b, start))
    return float((va - vb).norm() / (vb - v0).norm())


def fit(
    model,
    loss,
    optimizer,
    scheduler,
    train_dl,
    val_dl,
    epochs,
    *,
    checkpoint,
    hooks=None,
    device="cpu",
    rank=None,
    world_size=None,
    resume=None,
    **config,
) -> TrainResult:
    """`Trainer(...).fit(...)` with a `TrainConfig` of `config` (fp32, the loader's own
    batches and no periodic `last` unless given) and silent hooks unless given."""
    config = {
        "precision": "fp32",
        "micro_batch": "loader",
        "checkpoint_every_windows": None,
        **config,
    }
    trainer = Trainer(
        model,
        loss,
        optimizer,
        scheduler,
        config=TrainConfig(**config),
        checkpoints=checkpoint,
        hooks=hooks if hooks is not None else Hooks(),
        device=device,
        world=resolve_world(rank, world_size),
    )
    return trainer.fit(train_dl, val_dl, epochs, resume=resume)


def sgd_train(model, batches, tmp_path, *, epochs=1, lr=0.3, loss=None, result=None, **kwargs):
    """`fit()` with plain SGD on in-memory batches (validating on the first two), fp32.

    Returns the model; pass a list as `result` to receive the `TrainResult`."""
    out = fit(
        model,
        loss or nn.CrossEntropyLoss(weight=WEIGHTS),
        torch.optim.SGD(model.parameters(), lr=lr),
        None,
        batches,
        batches[:2],
        epochs,
        checkpoint=tmp_path / "best.pth",
        **kwargs,
    )
    if result is not None:
        result.append(out)
    return model
