"""The value contract of raw candles and what happens to the rows that break it
(docs/design.md, "Data contract"); part of reading raw candles (`raw_io`).

Bad rows. A row breaks the value contract with a null, NaN or infinite value, a price
<= 0, a negative volume, taker-buy volume above the volume, high < low, or open or close
outside [low, high]. A row is out of order when its timestamp is below the latest
timestamp of the earlier valid rows of its file and symbol. The caller chooses what
happens to such rows with ``on_bad_rows``:

* ``"error"`` (the default): a `DataError` for the first one, naming file, column, row;
* ``"drop"``: they are left out and reported as `BadRow` records (file, row, reason).

Rows at one timestamp are told apart here too (`_duplicates`): identical ones are
collapsed, differing ones conflict (reason `CONFLICT_REASON`); `raw_io` applies this
within a file and across a symbol's files.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

import numpy as np

from src.core.errors import DataError
from src.data.raw_columns import PRICE_COLUMNS, TAKER_COL

BadRowPolicy = Literal["error", "drop"]
#: The values `on_bad_rows` takes (module docstring).
BAD_ROW_POLICIES: tuple[str, ...] = ("error", "drop")
#: `BadRow.reason` of the rows at a timestamp whose rows differ.
CONFLICT_REASON = "conflicting duplicate timestamp"
#: `BadRow.reason` of a row earlier than an earlier row of its file.
OUT_OF_ORDER_REASON = "'timestamp' is earlier than an earlier row"
# open/close may sit outside [low, high] by this relative amount (float32 rounding).
_CONTAIN_TOL = 1e-6


@dataclass(frozen=True)
class BadRow:
    """A row left out under ``on_bad_rows="drop"``."""

    file: str
    """File name."""
    row: int
    """Row in that file (0 = first data row)."""
    symbol: str
    timestamp_ms: int | None
    """Epoch milliseconds, UTC; None when the timestamp itself is empty."""
    reason: str
    """What is wrong, e.g. ``'high' is below 'low'``."""


def iso_ms(ms: int) -> str:
    """Epoch milliseconds as an ISO-8601 UTC string (`2024-01-01T00:00:00+00:00`)."""
    try:
        return datetime.fromtimestamp(int(ms) / 1000.0, tz=UTC).isoformat()
    except (OverflowError, OSError, ValueError):  # beyond year 9999: still say something
        return f"{int(ms)} ms since 1970"


def _check_policy(on_bad_rows: str) -> None:
    if on_bad_rows not in BAD_ROW_POLICIES:
        raise ValueError(f"on_bad_rows must be one of {BAD_ROW_POLICIES}, got {on_bad_rows!r}")


def _value_checks(
    open_: np.ndarray,
    high: np.ndarray,
    low: np.ndarray,
    close: np.ndarray,
    volume: np.ndarray,
    taker: np.ndarray | None,
) -> Iterator[tuple[np.ndarray, str]]:
    """(rows that break it, what is wrong) for each value rule, in reporting order;
    computed one at a time, so an error stops at the first."""
    numbers = {"open": open_, "high": high, "low": low, "close": close, "volume": volume}
    if taker is not None:
        numbers[TAKER_COL] = taker
    for name, x in numbers.items():
        yield np.isnan(x), f"column '{name}' is NaN"
        yield np.isinf(x), f"column '{name}' is infinite"
    for name in PRICE_COLUMNS:
        yield numbers[name] <= 0, f"column '{name}' is <= 0"
    yield volume < 0, "column 'volume' is negative"
    if taker is not None:
        yield taker < 0, "column 'taker_buy_volume' is negative"
        yield taker > volume * (1 + _CONTAIN_TOL), "column 'taker_buy_volume' is above 'volume'"
    yield high < low, "'high' is below 'low'"
    yield np.maximum(open_, close) > high * (1 + _CONTAIN_TOL), "open/close is above 'high'"
    yield np.minimum(open_, close) < low * (1 - _CONTAIN_TOL), "open/close is below 'low'"


class _Triage:
    """The bad rows of one chunk: under "error" raises for the first row a rule finds;
    under "drop" records each row's first reason (`code` indexes `reasons`; -1: good)."""

    def __init__(
        self,
        policy: str,
        path: Path,
        symbol: str,
        ts: np.ndarray,
        rows: np.ndarray,
        code: np.ndarray,
        reasons: list[str],
    ) -> None:
        self.policy, self.path, self.symbol = policy, path, symbol
        self.ts, self.rows, self.code, self.reasons = ts, rows, code, reasons

    def reject(self, bad: np.ndarray, what: str) -> None:
        if not bad.any():
            return
        if self.policy == "error":
            i = int(np.argmax(bad))
            raise DataError(
                f"{self.path}: {what} at row {int(self.rows[i])} ({iso_ms(self.ts[i])}, "
                f"symbol {self.symbol}); fix or drop that row"
            )
        new = bad & (self.code < 0)
        if new.any():
            self.code[new] = len(self.reasons)
            self.reasons.append(what)

    def reject_at(self, index: np.ndarray, what: str) -> None:
        """Reject the rows at positions `index` (under "drop" only)."""
        bad = np.zeros(self.code.shape[0], dtype=bool)
        bad[index] = True
        self.reject(bad, what)


def _late(ts: np.ndarray) -> np.ndarray:
    """Rows whose timestamp is below the maximum of the rows before them."""
    late = np.zeros(ts.shape[0], dtype=bool)
    if ts.shape[0] > 1:
        late[1:] = ts[1:] < np.maximum.accumulate(ts)[:-1]
    return late


@dataclass(frozen=True)
class _Duplicates:
    """Rows at a timestamp of an earlier row (timestamps in non-decreasing order)."""

    first: np.ndarray
    """Position of the first row at each row's timestamp."""
    differs: np.ndarray
    """The row differs from the first row at its timestamp in some value."""
    conflict: np.ndarray
    """The row's timestamp has rows that differ."""
    extra: np.ndarray
    """The row repeats the first row at its timestamp exactly (to collapse)."""


def _duplicates(ts: np.ndarray, values: list[np.ndarray]) -> _Duplicates:
    n = ts.shape[0]
    starts = np.ones(n, dtype=bool)
    starts[1:] = ts[1:] != ts[:-1]
    if starts.all():  # the common case: no duplicates
        none = np.zeros(n, dtype=bool)
        return _Duplicates(np.arange(n), none, none, none)
    group = np.cumsum(starts) - 1
    first = np.flatnonzero(starts)[group]
    differs = np.zeros(n, dtype=bool)
    for x in values:
        differs |= x != x[first]
    conflict = (np.bincount(group, weights=differs) > 0)[group]
    return _Duplicates(first, differs, conflict, ~starts & ~conflict)


def _raise_order(
    path: Path,
    symbol: str,
    ts: np.ndarray,
    rows: np.ndarray,
    values: list[np.ndarray],
    late: np.ndarray,
) -> None:
    """Under "error" (all rows valid): raise for the first row that is out of order or
    conflicts with an earlier row at its timestamp, whichever comes first."""
    end = int(np.argmax(late)) if late.any() else ts.shape[0]
    dup = _duplicates(ts[:end], [x[:end] for x in values])  # sorted up to `end`
    if dup.differs.any():
        i = int(np.argmax(dup.differs))
        raise DataError(
            f"{path}: column 'timestamp' at row {int(rows[i])} ({iso_ms(ts[i])}, symbol "
            f"{symbol}) duplicates row {int(rows[dup.first[i]])} with different values; "
            "keep one of them"
        )
    if late.any():
        raise DataError(
            f"{path}: column 'timestamp' at row {int(rows[end])} ({iso_ms(ts[end])}, "
            f"symbol {symbol}) is earlier than the previous row ({iso_ms(ts[end - 1])}); "
            "sort by time and drop duplicates"
        )


__all__ = [
    "BAD_ROW_POLICIES",
    "CONFLICT_REASON",
    "OUT_OF_ORDER_REASON",
    "BadRow",
    "BadRowPolicy",
    "iso_ms",
]
