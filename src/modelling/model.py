"""SAIMP: per-bar encoder -> learned positions -> Transformer over time -> 4 logits.

The model has no I/O, logging or distributed code. It has no batch-dependent layers
(LayerNorm, never BatchNorm), so the gradient of a window of samples does not depend
on how the window is cut into micro-batches; exact gradient accumulation and
automatic micro-batching rely on that.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from src.core.constants import NUM_CLASSES


@dataclass(frozen=True, kw_only=True)
class SAIMPConfig:
    n_features: int
    """Features per bar."""
    seq_len: int
    """Bars per window (the size of the learned positional table)."""
    d_model: int = 32
    n_heads: int = 4
    n_layers: int = 2
    d_ff: int = 64
    dropout: float = 0.1
    encoder: str = "linear"
    """"linear": a projection of each bar's features; "cnn": a 1-D CNN over price levels."""
    levels: int = 1
    """With encoder="cnn", each bar's features are `channels x levels` (level-major last)."""
    n_classes: int = NUM_CLASSES

    def __post_init__(self) -> None:
        if self.encoder == "cnn" and self.n_features % self.levels:
            raise ValueError(
                f"model.levels ({self.levels}) must divide the number of features "
                f"({self.n_features}) for the cnn encoder"
            )


class LevelCNNEncoder(nn.Module):
    """Embeds one bar whose features are channels x price levels with a 1-D CNN over levels."""

    def __init__(self, channels: int, levels: int, d_model: int) -> None:
        super().__init__()
        self.channels, self.levels = channels, levels
        self.conv = nn.Sequential(
            nn.Conv1d(channels, d_model, kernel_size=3, padding=1),
            nn.GELU(),
            nn.Conv1d(d_model, d_model, kernel_size=3, padding=1),
            nn.GELU(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, _ = x.shape  # (B, T, F) with F = C * L
        bars = x.reshape(b * t, self.channels, self.levels)  # (B*T, C, L)
        return self.conv(bars).mean(dim=-1).reshape(b, t, -1)  # (B, T, D)


class SAIMP(nn.Module):
    """Market-signal classifier over a window of bars; returns logits, never probabilities."""

    def __init__(self, cfg: SAIMPConfig) -> None:
        super().__init__()
        self.cfg = cfg
        if cfg.encoder == "cnn":
            self.encoder: nn.Module = LevelCNNEncoder(
                cfg.n_features // cfg.levels, cfg.levels, cfg.d_model
            )
        else:
            self.encoder = nn.Linear(cfg.n_features, cfg.d_model)
        self.position = nn.Parameter(torch.zeros(1, cfg.seq_len, cfg.d_model))
        nn.init.normal_(self.position, std=0.02)
        layer = nn.TransformerEncoderLayer(
            d_model=cfg.d_model,
            nhead=cfg.n_heads,
            dim_feedforward=cfg.d_ff,
            dropout=cfg.dropout,
            activation="gelu",
            batch_first=True,
            norm_first=True,  # pre-norm trains stably without warm-up
        )
        # enable_nested_tensor only matters with padding masks, which windows never have.
        self.transformer = nn.TransformerEncoder(
            layer, num_layers=cfg.n_layers, enable_nested_tensor=False
        )
        self.norm = nn.LayerNorm(cfg.d_model)
        self.head = nn.Sequential(
            nn.Linear(cfg.d_model, cfg.d_model),
            nn.GELU(),
            nn.Dropout(cfg.dropout),
            nn.Linear(cfg.d_model, cfg.n_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, t, _ = x.shape  # (B, T, F)
        h = self.encoder(x) + self.position[:, -t:]  # (B, T, D)
        h = self.transformer(h)  # (B, T, D)
        # The last bar's state sees the whole window and is the bar the label belongs to.
        return self.head(self.norm(h[:, -1]))  # (B, n_classes)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
