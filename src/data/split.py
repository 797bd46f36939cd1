"""Chronological train / validation / test split with the purge rule (pure numpy).

The lake's global time range is cut in three consecutive parts: train, then
validation, then test, either by fractions of the time range or by ISO dates. A
sample (a window ending at bar t) belongs to a split only if its whole label horizon
lies before the next split starts, so no label ever looks into a later split:

- train       iff timestamp < val_start                and horizon_end < val_start
- validation  iff val_start <= timestamp < test_start  and horizon_end < test_start
- test        iff timestamp >= test_start
- otherwise purged (its horizon straddles a boundary); purged samples are counted.

The inputs of a window may include bars of an earlier split: that is the past, which
the model is allowed to see at prediction time.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np

from src.core.errors import UserError

#: Split names in chronological order; their position is the code `assign_split` returns.
SPLITS: tuple[str, ...] = ("train", "val", "test")
#: Code `assign_split` gives a sample whose label horizon crosses a split boundary.
PURGED: int = -1


class SplitError(UserError, ValueError):
    """A split setting that cannot work (bad date, validation after test)."""


@dataclass(frozen=True)
class SplitBounds:
    """Where validation and test start, in UTC epoch milliseconds (train starts at -inf)."""

    val_start_ms: int
    """First timestamp of the validation split."""
    test_start_ms: int
    """First timestamp of the test split (>= val_start_ms)."""

    def __post_init__(self) -> None:
        if self.test_start_ms < self.val_start_ms:
            raise SplitError(
                f"validation must start before test: val_start={iso(self.val_start_ms)} "
                f"is after test_start={iso(self.test_start_ms)}; fix data.val_start/test_start "
                "or the fractions"
            )

    def to_dict(self) -> dict[str, object]:
        """JSON-friendly form, with readable dates next to the milliseconds."""
        return {
            "val_start_ms": self.val_start_ms,
            "test_start_ms": self.test_start_ms,
            "val_start": iso(self.val_start_ms),
            "test_start": iso(self.test_start_ms),
        }


def split_index(name: str) -> int:
    """Code of a split name ("train" -> 0, "val" -> 1, "test" -> 2); ValueError otherwise."""
    try:
        return SPLITS.index(name)
    except ValueError:
        raise SplitError(f"unknown split {name!r}; known: {', '.join(SPLITS)}") from None


def iso(ms: int) -> str:
    """A UTC epoch-millisecond timestamp as an ISO string (for messages and summaries)."""
    return datetime.fromtimestamp(ms / 1000, tz=UTC).isoformat().replace("+00:00", "Z")


def parse_date_ms(value: str, setting: str) -> int:
    """Parse an ISO date or datetime to UTC epoch ms; a naive value is taken as UTC."""
    try:
        parsed = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        raise SplitError(
            f"{setting}: {value!r} is not an ISO date; use e.g. 2024-03-01 or 2024-03-01T12:00"
        ) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return int(round(parsed.timestamp() * 1000))


def split_bounds(
    t_min_ms: int,
    t_max_ms: int,
    *,
    val_fraction: float,
    test_fraction: float,
    val_start: str | None = None,
    test_start: str | None = None,
) -> SplitBounds:
    """Split bounds for data covering [t_min_ms, t_max_ms] (both are bar timestamps).

    Fractions are of the half-open time range [t_min, t_max + 1 ms), so a zero fraction
    gives an empty split (its start lies after the last bar) rather than a one-bar one.
    An ISO date, when set, overrides the matching fraction.
    """
    if t_max_ms < t_min_ms:
        raise SplitError(f"empty time range: t_max {t_max_ms} < t_min {t_min_ms}")
    if not (0 <= val_fraction < 1 and 0 <= test_fraction < 1):
        raise SplitError("data.val_fraction and data.test_fraction must be in [0, 1)")
    if val_fraction + test_fraction >= 1:
        raise SplitError("data.val_fraction + data.test_fraction must leave time for training")
    span = t_max_ms + 1 - t_min_ms
    if test_start is not None:
        test_ms = parse_date_ms(test_start, "data.test_start")
    else:
        test_ms = t_min_ms + math.ceil(span * (1.0 - test_fraction))
    if val_start is not None:
        val_ms = parse_date_ms(val_start, "data.val_start")
    elif test_start is not None:
        # Validation keeps its share of the whole range, ending where test starts.
        val_ms = test_ms - math.floor(span * val_fraction)
    else:
        val_ms = t_min_ms + math.ceil(span * (1.0 - test_fraction - val_fraction))
    return SplitBounds(val_start_ms=int(val_ms), test_start_ms=int(test_ms))


def assign_split(
    timestamp_ms: np.ndarray, horizon_end_ms: np.ndarray, bounds: SplitBounds
) -> np.ndarray:
    """Split code of each sample: 0 train, 1 val, 2 test, -1 purged (int8, vectorised).

    `timestamp_ms` is the time of the window's last bar, `horizon_end_ms` the time its
    label was decided; both int64 epoch milliseconds.
    """
    ts = np.asarray(timestamp_ms, dtype=np.int64)
    he = np.asarray(horizon_end_ms, dtype=np.int64)
    v, t = bounds.val_start_ms, bounds.test_start_ms
    out = np.full(ts.shape, PURGED, dtype=np.int8)
    out[(ts < v) & (he < v)] = 0
    out[(ts >= v) & (ts < t) & (he < t)] = 1
    out[ts >= t] = 2
    return out
