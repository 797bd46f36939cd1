"""Does a label mix make a score, and do the class weights fit it? Pure functions.

Every test here reads windows per class (`LakeIndex.label_counts(split)`), never the
data itself. A weighted cross entropy gives class c the share `w_c n_c / sum(w n)` of
its loss mass: the default weights (1, 10, 10, 20) were made for a mix of about 80%
Neutro and give every class 20-35% of it there; on a mix with few Neutro they hand one
class most of the loss, and the model learns to answer it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from src.core.constants import CLASS_NAMES

MISFIT_RATIO = 4.0
"""The weights do not fit the mix when the largest weighted loss share of a present
class is more than this many times the smallest."""
PREPARE_HINT = "see saimp prepare's barrier settings (e.g. --barriers volatility)"


@dataclass(frozen=True)
class ClassShare:
    """One class of a split beside its weight."""

    name: str
    windows: int
    share: float
    """Fraction of the split's windows."""
    weight: float
    loss_share: float
    """Fraction of the weighted loss mass, `w_c n_c / sum(w n)` (0 when there is none)."""


def class_shares(
    counts: Sequence[int] | np.ndarray, weights: Sequence[float], names=CLASS_NAMES
) -> list[ClassShare]:
    """Each class's share of the windows and of the weighted loss mass."""
    n = np.asarray(counts, dtype=np.float64)
    w = np.asarray(weights, dtype=np.float64)
    mass = w * n
    total, total_mass = n.sum(), mass.sum()
    return [
        ClassShare(
            name,
            int(n[i]),
            float(n[i] / total) if total else 0.0,
            float(w[i]),
            float(mass[i] / total_mass) if total_mass else 0.0,
        )
        for i, name in enumerate(names)
    ]


def _pct(x: float) -> str:
    return f"{100 * x:.0f}%"


def weights_misfit(
    counts: Sequence[int] | np.ndarray, weights: Sequence[float], ratio: float = MISFIT_RATIO
) -> str | None:
    """A warning when the weights do not fit the mix (largest / smallest weighted loss
    share of the present classes above `ratio`), naming both classes; else None."""
    present = [s for s in class_shares(counts, weights) if s.windows > 0]
    if len(present) < 2:
        return None
    hi = max(present, key=lambda s: s.loss_share)
    lo = min(present, key=lambda s: s.loss_share)
    if lo.loss_share > 0 and hi.loss_share / lo.loss_share <= ratio:
        return None
    mix = ", ".join(f"{s.name} {_pct(s.share)}" for s in present)
    return (
        f"class weights {', '.join(f'{w:g}' for w in weights)} do not fit the training mix "
        f"({mix} of windows): {hi.name} carries {_pct(hi.loss_share)} of the weighted loss "
        f"and {lo.name} {_pct(lo.loss_share)}, so the model learns mostly {hi.name}; try "
        "--class-weights balanced"
    )


def single_class(counts: Sequence[int] | np.ndarray) -> str | None:
    """The name of the only class with windows, None when there are none or several."""
    present = np.flatnonzero(np.asarray(counts) > 0)
    return CLASS_NAMES[int(present[0])] if len(present) == 1 else None


def absent_classes(counts: Sequence[int] | np.ndarray) -> list[str]:
    """Names of the classes with no windows (all of them for an empty split)."""
    return [name for name, c in zip(CLASS_NAMES, counts, strict=True) if int(c) == 0]


def single_class_training(counts: Sequence[int] | np.ndarray, where: str) -> str | None:
    """The one-line refusal when the training split holds a single class (nothing to tell
    apart: every weight and metric is moot), naming the class and `where` (the lake);
    None otherwise."""
    name = single_class(counts)
    if name is None:
        return None
    return (
        f"{where}: the training split holds only {name} windows "
        f"({int(np.asarray(counts).sum()):,}): nothing to learn to tell apart; prepare the "
        "lake with barriers its prices reach (saimp prepare --barriers volatility, or "
        "smaller --upper1-pct and --lower-pct)"
    )


def absent_in_training(counts: Sequence[int] | np.ndarray) -> str | None:
    """A warning naming the classes the training split lacks, None when all are there."""
    absent = absent_classes(counts)
    if not absent or len(absent) == len(CLASS_NAMES):
        return None
    return (
        f"the training split has no {', '.join(absent)} windows: the model never sees "
        f"{'it' if len(absent) == 1 else 'them'} as a target and cannot learn to predict "
        f"{'it' if len(absent) == 1 else 'them'}; {PREPARE_HINT}"
    )


def single_class_split(counts: Sequence[int] | np.ndarray, split: str) -> str | None:
    """A warning when `split` holds a single class: its macro-F1 and accuracy are not
    scores (always answering that class is perfect); None otherwise."""
    name = single_class(counts)
    if name is None:
        return None
    return (
        f"the {split} split holds only {name} windows: its macro-F1 and accuracy are not "
        f"scores (always answering {name} is perfect); {PREPARE_HINT}"
    )


def start_warnings(
    train_counts: Sequence[int] | np.ndarray,
    weights: Sequence[float],
    val_counts: Sequence[int] | np.ndarray,
) -> list[str]:
    """What a run warns about at its start, given the windows per class of its training
    and validation splits and the resolved class weights: classes the training split
    lacks, weights that do not fit its mix, a single-class validation split."""
    found = [
        absent_in_training(train_counts),
        weights_misfit(train_counts, weights),
        single_class_split(val_counts, "validation"),
    ]
    return [w for w in found if w]
