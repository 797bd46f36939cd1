"""Walk-forward folds: where each fold trains, validates and tests (pure functions).

The lake's time range [t_min, t_max + 1 ms) is cut into K + 1 equal blocks. Fold k
(1..K) tests on block k, the period no model of that fold has seen; it trains on the
blocks before it, all of them (expanding, the default) or only block k - 1 (rolling,
through the split's `train_start`), and validates on the last `val_fraction` of that
training range. The purge and the embargo (`src.data.split`) apply at the validation
and the test boundary, so no training or validation label reaches past the start of
the next period and nothing is learnt within an embargo after a boundary. The K test
blocks are consecutive and together cover the last K blocks: stitched, they are one
out-of-sample period.

This is the walk-forward of Lopez de Prado, *Advances in Financial Machine Learning*
(2018), ch. 12.1 (each decision made with the past only), with the purge and embargo
of ch. 7.4 at the boundaries.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from src.core.errors import UserError
from src.data.split import SplitBounds, iso

SCHEMES = ("expanding", "rolling")
MS_PER_MINUTE = 60_000


@dataclass(frozen=True)
class Fold:
    """One fold's periods, in UTC epoch ms (half-open ranges)."""

    k: int
    """1..K"""
    train_from_ms: int
    """First instant of the training range (the lake's start when expanding)."""
    val_start_ms: int
    test_start_ms: int
    """Also the end of the training range (validation included)."""
    test_end_ms: int
    """End (exclusive) of the tested period."""
    embargo_ms: int
    rolling: bool

    @property
    def bounds(self) -> SplitBounds:
        """The split this fold's training run uses (train_start only when rolling)."""
        return SplitBounds(
            val_start_ms=self.val_start_ms,
            test_start_ms=self.test_start_ms,
            embargo_ms=self.embargo_ms,
            train_start_ms=self.train_from_ms if self.rolling else None,
        )

    def to_dict(self) -> dict[str, object]:
        """JSON-friendly, with readable dates next to the milliseconds."""
        out: dict[str, object] = {
            "fold": self.k,
            "scheme": "rolling" if self.rolling else "expanding",
            "train_from_ms": self.train_from_ms,
            "val_start_ms": self.val_start_ms,
            "test_start_ms": self.test_start_ms,
            "test_end_ms": self.test_end_ms,
            "embargo_ms": self.embargo_ms,
        }
        for key in ("train_from", "val_start", "test_start", "test_end"):
            out[key] = iso(int(out[f"{key}_ms"]))  # type: ignore[arg-type]
        return out


def block_edges(t_min_ms: int, t_max_ms: int, n_blocks: int) -> list[int]:
    """The n_blocks + 1 edges (ms) of n_blocks equal blocks of [t_min, t_max + 1 ms);
    the first is t_min, the last t_max + 1."""
    span = t_max_ms + 1 - t_min_ms
    return [t_min_ms + (span * i) // n_blocks for i in range(n_blocks)] + [t_max_ms + 1]


def fold_bounds(
    t_min_ms: int,
    t_max_ms: int,
    *,
    folds: int,
    rolling: bool = False,
    val_fraction: float = 0.15,
    embargo_minutes: float = 0,
) -> list[Fold]:
    """The K = `folds` folds of data covering [t_min_ms, t_max_ms] (bar timestamps).

    Validation starts at the training range's start plus ceil((1 - val_fraction) x its
    length). Raises `UserError` naming the flag: `--folds` < 1 or more blocks than
    milliseconds, `--val-fraction` outside (0, 1), `--embargo-minutes` < 0 or so long
    that a fold's validation period would hold no time outside its embargo.
    """
    if folds < 1:
        raise UserError(f"--folds must be >= 1, got {folds}")
    if not 0 < val_fraction < 1:
        raise UserError(f"--val-fraction must be in (0, 1), got {val_fraction}")
    if embargo_minutes < 0:
        raise UserError(f"--embargo-minutes must be >= 0, got {embargo_minutes}")
    if t_max_ms + 1 - t_min_ms < folds + 1:
        raise UserError(
            f"--folds {folds}: the data's time range is too short for {folds + 1} blocks"
        )
    edges = block_edges(t_min_ms, t_max_ms, folds + 1)
    embargo_ms = int(round(embargo_minutes * MS_PER_MINUTE))
    out = []
    for k in range(1, folds + 1):
        train_from = edges[k - 1] if rolling else edges[0]
        test_start = edges[k]
        length = test_start - train_from
        val_start = train_from + math.ceil(length * (1.0 - val_fraction))
        if test_start - val_start <= embargo_ms:
            raise UserError(
                f"--embargo-minutes {embargo_minutes:g} leaves fold {k} no validation time: its "
                f"validation period is {(test_start - val_start) / MS_PER_MINUTE:g} minutes "
                f"({iso(val_start)} to {iso(test_start)}); use fewer --folds, a larger "
                "--val-fraction or a shorter --embargo-minutes"
            )
        out.append(Fold(k, train_from, val_start, test_start, edges[k + 1], embargo_ms, rolling))
    return out
