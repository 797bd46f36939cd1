"""Per-feature standardisation fitted on the training split only.

`fit_normalizer` streams the rows of the training time range (train_start <=
timestamp < val_start) unit by unit and merges per-unit float64 moments (Chan et al.'s
pairwise update), so it is exact to float64 precision without holding the split in
memory and without the cancellation of a plain sum of squares. Validation and test rows
never touch the statistics, which is what keeps evaluation honest. The statistics travel
with the checkpoint through `to_dict()` / `from_dict()`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from src.core import constants as C
from src.core.errors import DataError
from src.data.lake import FileCache, LakeIndex, column_ms, read_columns

#: A feature whose standard deviation is below this is constant: it is divided by 1.
STD_FLOOR = 1e-8


@dataclass(eq=False)  # numpy fields: compare `to_dict()` instead
class Normalizer:
    """x -> (x - mean) / std per feature (float64 statistics, applied in float32)."""

    feature_names: list[str]
    mean: np.ndarray
    std: np.ndarray
    n_rows: int = 0
    """Training rows the statistics come from (0 for an identity normaliser)."""

    def __post_init__(self) -> None:
        self.feature_names = [str(n) for n in self.feature_names]
        self.mean = np.asarray(self.mean, dtype=np.float64).reshape(-1)
        self.std = np.asarray(self.std, dtype=np.float64).reshape(-1)
        n = len(self.feature_names)
        if self.mean.shape != (n,) or self.std.shape != (n,):
            raise ValueError(f"normaliser needs {n} means and stds, got {self.mean.shape}")
        if not (np.isfinite(self.mean).all() and np.isfinite(self.std).all()):
            raise ValueError("normaliser statistics must be finite")
        if (self.std <= 0).any():
            raise ValueError("normaliser std must be > 0")
        # float32 copies: applying is a hot path, done once per loaded unit.
        self._mean32 = self.mean.astype(np.float32)
        self._inv_std32 = (1.0 / self.std).astype(np.float32)

    @classmethod
    def identity(cls, feature_names: list[str]) -> Normalizer:
        n = len(feature_names)
        return cls(feature_names, np.zeros(n), np.ones(n))

    def apply_(self, x: np.ndarray) -> np.ndarray:
        """Normalise a float32 (..., F) array in place and return it."""
        np.subtract(x, self._mean32, out=x)
        np.multiply(x, self._inv_std32, out=x)
        return x

    def apply(self, x: np.ndarray) -> np.ndarray:
        """A normalised float32 copy of a (..., F) array."""
        return self.apply_(np.array(x, dtype=np.float32, copy=True))

    def check_features(self, feature_names: list[str], where: str) -> None:
        """DataError when the data's features are not the ones the statistics were fitted on."""
        if list(feature_names) != self.feature_names:
            raise DataError(
                f"{where}: features {list(feature_names)} differ from the normaliser's "
                f"{self.feature_names} (from the checkpoint); evaluate on data prepared with "
                "the same features"
            )

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form saved in the checkpoint sidecar."""
        return {
            "features": list(self.feature_names),
            "mean": self.mean.tolist(),
            "std": self.std.tolist(),
            "n_rows": int(self.n_rows),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Normalizer:
        try:
            return cls(
                list(data["features"]), data["mean"], data["std"], int(data.get("n_rows", 0))
            )
        except (KeyError, TypeError, ValueError) as err:
            raise DataError(
                f"normalisation statistics are malformed ({err}); use a sidecar JSON written "
                "by training"
            ) from None


@dataclass
class _Moments:
    """Running count, mean and sum of squared deviations per feature (float64)."""

    n: int
    mean: np.ndarray
    m2: np.ndarray

    @classmethod
    def of_block(cls, x: np.ndarray) -> _Moments:
        x64 = x.astype(np.float64)
        mean = x64.mean(axis=0) if len(x) else np.zeros(x.shape[1])
        return cls(len(x), mean, ((x64 - mean) ** 2).sum(axis=0))

    def merge(self, other: _Moments) -> None:
        """Fold another block's moments in with Chan et al.'s pairwise update."""
        if other.n == 0:
            return
        total = self.n + other.n
        delta = other.mean - self.mean
        self.mean = self.mean + delta * (other.n / total)
        self.m2 = self.m2 + other.m2 + delta**2 * (self.n * other.n / total)
        self.n = total


#: Gathers one picklable object from every rank and returns them in rank order.
Gather = Callable[[Any], list[Any]]


def fit_normalizer(
    index: LakeIndex,
    *,
    rank: int = 0,
    world_size: int = 1,
    gather: Gather | None = None,
) -> Normalizer:
    """Fit mean and std on every row with train_start <= timestamp < val_start (the
    training time range; train_start: the bounds' `train_start_ms`, -inf when None).

    Rows are streamed one unit at a time; only units that start before validation are
    read. With `world_size > 1`, rank r reads only every world_size-th of those units
    and `gather` (an all-gather across ranks) brings every unit's moments to every rank,
    which merges them in unit order: the same statistics, to the bit, as one process
    reading every unit, for a world_size-th of the reading per rank (without `gather`,
    every rank reads every unit). Raises DataError (on every rank) when there is no
    training row or a feature is not finite.
    """
    if gather is None:  # no way to combine shares: read every unit here
        rank, world_size = 0, 1
    names = index.feature_names
    in_range = index.units.first_ms < index.bounds.val_start_ms
    if index.bounds.train_start_ms is not None:
        in_range &= index.units.last_ms >= index.bounds.train_start_ms
    train_units = np.flatnonzero(in_range)
    mine = train_units[rank::world_size]
    try:
        part: list[_Moments] | str = _unit_moments(index, mine, FileCache())
    except DataError as err:
        part = str(err)  # every rank must reach the gather, then all raise it
    parts = gather(part) if world_size > 1 else [part]
    for got in parts:
        if isinstance(got, str):
            raise DataError(got)
    moments = _Moments(0, np.zeros(len(names)), np.zeros(len(names)))
    for i in range(len(train_units)):  # unit order, whatever the number of ranks
        moments.merge(parts[i % world_size][i // world_size])
    if moments.n == 0:
        raise DataError(
            f"{index.data_dir}: the training split has no rows (validation starts at the "
            "first bar); lower data.val_fraction/test_fraction or move data.val_start later"
        )
    std = np.sqrt(moments.m2 / moments.n)
    std = np.where(std < STD_FLOOR, 1.0, std)
    return Normalizer(list(names), moments.mean, std, moments.n)


def _unit_moments(index: LakeIndex, units: np.ndarray, cache: FileCache) -> list[_Moments]:
    """Moments of the training-range rows of each unit, in the order given."""
    names = index.feature_names
    val_start, start = index.bounds.val_start_ms, index.bounds.train_start_ms
    out = []
    try:
        for u in units:
            lf = index.files[index.units.file[u]]
            rg = int(index.units.row_group[u])
            table = read_columns(cache.get(lf.path), lf.path, rg, [C.TIMESTAMP_COL, *names])
            ts = column_ms(table, C.TIMESTAMP_COL)
            keep = (ts < val_start) if start is None else (ts < val_start) & (ts >= start)
            block = np.stack([table.column(n).to_numpy() for n in names], axis=1)[keep]
            if not np.isfinite(block).all():
                col = names[int(np.flatnonzero(~np.isfinite(block).all(axis=0))[0])]
                raise DataError(
                    f"{lf.path}: column {col!r} has a non-finite value (NaN or inf) in row "
                    f"group {rg}; features must be finite, re-run `saimp prepare`"
                )
            out.append(_Moments.of_block(block))
    finally:
        cache.close()
    return out
