"""Chronological train / validation / test split with purge and embargo (pure numpy).

The lake's global time range is cut in three consecutive parts: train, then
validation, then test, either by fractions of the time range or by ISO dates. A
sample (a window ending at bar t) belongs to a split only if its whole label horizon
lies before the next split starts (the purge), and not within `embargo` after the
start of its own split (the embargo), so no label ever looks into a later split and
the samples on either side of a boundary are at least an embargo apart:

- train       iff train_start <= timestamp < val_start        and horizon_end < val_start
- validation  iff val_start + embargo <= timestamp < test_start and horizon_end < test_start
- test        iff timestamp >= test_start + embargo
- otherwise in no split (its horizon straddles a boundary, it lies in an embargo, or
  it is before train_start); such samples are counted as purged.

Purge and embargo are Lopez de Prado's (*Advances in Financial Machine Learning*,
2018, ch. 7.4): the purge removes the samples whose label overlaps the next split, the
embargo a further gap after each boundary, against serial correlation leaking across
it. `train_start` (default: none, -inf) lets a rolling walk-forward train on a window
of the past only (ch. 12).

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
#: Code `assign_split` gives a sample in no split (purged, embargoed, before train_start).
PURGED: int = -1
MS_PER_MINUTE = 60_000


class SplitError(UserError, ValueError):
    """A split setting that cannot work (bad date, validation after test)."""


@dataclass(frozen=True)
class SplitBounds:
    """Where train, validation and test start, in UTC epoch milliseconds, and the
    embargo after each boundary (module docstring). The defaults of the later fields
    keep bounds recorded before them (train from -inf, no embargo) meaning the same."""

    val_start_ms: int
    """First timestamp of the validation period."""
    test_start_ms: int
    """First timestamp of the test period (>= val_start_ms)."""
    embargo_ms: int = 0
    """Samples ending within this many ms after val_start or test_start are in no split."""
    train_start_ms: int | None = None
    """First timestamp of the training period (None: from the first bar)."""

    def __post_init__(self) -> None:
        if self.test_start_ms < self.val_start_ms:
            raise SplitError(
                f"validation must start before test: val_start={iso(self.val_start_ms)} "
                f"is after test_start={iso(self.test_start_ms)}; fix data.val_start/test_start "
                "or the fractions"
            )
        if self.embargo_ms < 0:
            raise SplitError(
                f"data.embargo_minutes must be >= 0, got {self.embargo_ms / MS_PER_MINUTE:g}"
            )
        if self.train_start_ms is not None and self.train_start_ms >= self.val_start_ms:
            raise SplitError(
                f"training must start before validation: train_start="
                f"{iso(self.train_start_ms)} is not before val_start={iso(self.val_start_ms)}; "
                "fix data.train_start or data.val_start"
            )

    def to_dict(self) -> dict[str, object]:
        """JSON-friendly form, with readable dates next to the milliseconds."""
        return {
            "val_start_ms": self.val_start_ms,
            "test_start_ms": self.test_start_ms,
            "embargo_ms": self.embargo_ms,
            "train_start_ms": self.train_start_ms,
            "val_start": iso(self.val_start_ms),
            "test_start": iso(self.test_start_ms),
            "train_start": None if self.train_start_ms is None else iso(self.train_start_ms),
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
    embargo_minutes: float = 0,
    train_start: str | None = None,
) -> SplitBounds:
    """Split bounds for data covering [t_min_ms, t_max_ms] (both are bar timestamps).

    Fractions are of the half-open time range [start, t_max + 1 ms), where start is
    t_min, or `train_start` when that is later, so a zero fraction gives an empty split
    (its start lies after the last bar) rather than a one-bar one. An ISO date, when
    set, overrides the matching fraction. `embargo_minutes` (>= 0) becomes
    `embargo_ms`. Raises `SplitError` (a `UserError`) naming the setting.
    """
    if t_max_ms < t_min_ms:
        raise SplitError(f"empty time range: t_max {t_max_ms} < t_min {t_min_ms}")
    if not (0 <= val_fraction < 1 and 0 <= test_fraction < 1):
        raise SplitError("data.val_fraction and data.test_fraction must be in [0, 1)")
    if val_fraction + test_fraction >= 1:
        raise SplitError("data.val_fraction + data.test_fraction must leave time for training")
    if embargo_minutes < 0:
        raise SplitError(f"data.embargo_minutes must be >= 0, got {embargo_minutes}")
    train_ms = None if train_start is None else parse_date_ms(train_start, "data.train_start")
    if train_ms is not None and train_ms > t_max_ms:
        raise SplitError(
            f"data.train_start {iso(train_ms)} is after the data's last bar {iso(t_max_ms)}"
        )
    if train_ms is not None:
        t_min_ms = max(t_min_ms, train_ms)
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
    return SplitBounds(
        val_start_ms=int(val_ms),
        test_start_ms=int(test_ms),
        embargo_ms=int(round(embargo_minutes * MS_PER_MINUTE)),
        train_start_ms=train_ms,
    )


def assign_split(
    timestamp_ms: np.ndarray, horizon_end_ms: np.ndarray, bounds: SplitBounds
) -> np.ndarray:
    """Split code of each sample: 0 train, 1 val, 2 test, -1 in no split (purged,
    embargoed or before train_start), as int8, vectorised; the rules are the module
    docstring's.

    `timestamp_ms` is the time of the window's last bar, `horizon_end_ms` the time its
    label was decided; both int64 epoch milliseconds.
    """
    ts = np.asarray(timestamp_ms, dtype=np.int64)
    he = np.asarray(horizon_end_ms, dtype=np.int64)
    v, t, e = bounds.val_start_ms, bounds.test_start_ms, bounds.embargo_ms
    out = np.full(ts.shape, PURGED, dtype=np.int8)
    train = (ts < v) & (he < v)
    if bounds.train_start_ms is not None:
        train &= ts >= bounds.train_start_ms
    out[train] = 0
    out[(ts >= v + e) & (ts < t) & (he < t)] = 1
    out[ts >= t + e] = 2
    return out
