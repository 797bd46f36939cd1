"""The class weights a run's loss uses: the configured numbers, or "balanced" ones made
from the training split's class counts (pure functions).

The resolved numbers, never the word, are what the loss, the sidecar and `saimp
evaluate`'s loss use. Every rank resolves them from the same lake index, so they agree
under DDP without a collective.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from src.config import CLASS_WEIGHTS_BALANCED


def balanced_weights(counts: Sequence[int] | np.ndarray) -> tuple[float, ...]:
    """Inverse-frequency weights `w_c = N / (K n_c)` of windows per class `counts`.

    N: the windows, K: the classes present (n_c > 0). Each present class then carries
    the same share 1/K of the weighted loss, and the mean weight per window is exactly
    1, so the loss keeps the scale of an unweighted one. A class with no windows gets
    0: it never appears as a target. Raises `ValueError` when `counts` holds no window.
    """
    n = np.asarray(counts, dtype=np.float64)
    present = n > 0
    if not present.any():
        raise ValueError("balanced class weights need at least one training window")
    total, k = n.sum(), int(present.sum())
    w = np.zeros_like(n)
    w[present] = total / (k * n[present])
    return tuple(float(x) for x in w)


def resolve_class_weights(
    setting: Sequence[float] | str, train_counts: Sequence[int] | np.ndarray
) -> tuple[float, ...]:
    """The weights `train.class_weights` (`setting`) asks for: its numbers, or for
    "balanced" `balanced_weights(train_counts)` (windows per class of the training split)."""
    if isinstance(setting, str):
        if setting != CLASS_WEIGHTS_BALANCED:
            raise ValueError(f"train.class_weights: unknown setting {setting!r}")
        return balanced_weights(train_counts)
    return tuple(float(w) for w in setting)
