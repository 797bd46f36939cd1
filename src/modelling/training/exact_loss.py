"""Exact gradient accumulation for weighted-mean losses.

A class-weighted `CrossEntropyLoss` with reduction "mean" divides by the sum of the
weights of the samples in the batch it sees. Averaging K micro-batch means (the
usual `loss / K`) therefore does not give the gradient of one batch holding the same
samples: a micro-batch of three Neutro bars would weigh as much as one of three
SuperLong bars. The exact way is to backpropagate each micro-batch's *sum* of weighted
losses divided by the whole window's sum of weights, which is known before the first
backward pass because only the labels are needed for it.

`WindowLoss` splits a supported loss into those two parts:
- `nn.CrossEntropyLoss` and `nn.NLLLoss` with reduction "mean" (any `weight`,
  `ignore_index`, and for cross entropy any `label_smoothing`): normaliser = sum of
  `weight[y]` over non-ignored samples;
- the same with reduction "sum": the window's normaliser is 1 (a sum is already
  additive), whatever the number of micro-batches or ranks;
- any object with methods `sum_loss(logits, target) -> Tensor` and
  `normaliser(target) -> Tensor`, for a custom weighted-mean loss.
Anything else (a reduction of "none", an arbitrary callable) is rejected, because its
accumulated gradient could not be guaranteed to equal the one-batch gradient.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class UnsupportedLossError(TypeError):
    """The loss cannot be accumulated exactly; say which ones can."""


class WindowLoss:
    """A loss split into an additive numerator and a normaliser that depends on labels only."""

    def __init__(self, loss: nn.Module | object) -> None:
        self.loss = loss
        # Class weights in fp64 per device: the loop reads labels on the host, and copying
        # a CUDA weight tensor to the host on every window would synchronise the GPU.
        self._weights: dict[torch.device, torch.Tensor] = {}
        if isinstance(loss, nn.CrossEntropyLoss | nn.NLLLoss):
            if loss.reduction not in ("mean", "sum"):
                raise UnsupportedLossError(
                    f"{type(loss).__name__}(reduction={loss.reduction!r}) cannot be accumulated "
                    "exactly; use reduction='mean' or 'sum'"
                )
        elif not (hasattr(loss, "sum_loss") and hasattr(loss, "normaliser")):
            raise UnsupportedLossError(
                f"train() accumulates gradients exactly only for CrossEntropyLoss, NLLLoss or a "
                f"loss with sum_loss(logits, target) and normaliser(target); got "
                f"{type(loss).__name__}"
            )

    @property
    def is_sum(self) -> bool:
        """True for reduction "sum": the window's normaliser is 1, not a sum over batches."""
        return getattr(self.loss, "reduction", "mean") == "sum"

    def window_normaliser(self, total: float) -> float:
        """The divisor of a whole window given the sum of its batches' normalisers."""
        return 1.0 if self.is_sum else total

    def sum_loss(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Sum over the batch of each sample's weighted loss (fp32)."""
        loss = self.loss
        logits = logits.float()
        if isinstance(loss, nn.CrossEntropyLoss):
            return F.cross_entropy(
                logits,
                target,
                weight=loss.weight,
                ignore_index=loss.ignore_index,
                reduction="sum",
                label_smoothing=loss.label_smoothing,
            )
        if isinstance(loss, nn.NLLLoss):
            return F.nll_loss(
                logits, target, weight=loss.weight, ignore_index=loss.ignore_index, reduction="sum"
            )
        return loss.sum_loss(logits, target)

    def normaliser(self, target: torch.Tensor) -> torch.Tensor:
        """What a "mean" reduction would divide this batch's sum by (fp64 for exactness)."""
        loss = self.loss
        if isinstance(loss, nn.CrossEntropyLoss | nn.NLLLoss):
            keep = target != loss.ignore_index
            if loss.weight is None:
                return keep.sum().to(torch.float64)
            w = self._weights.get(target.device)
            if w is None:
                w = self._weights[target.device] = loss.weight.detach().to(
                    target.device, torch.float64
                )
            return w[target[keep]].sum()
        return loss.normaliser(target).to(torch.float64)
