"""A loaded checkpoint ready to predict: from normalised feature rows and the rows that
end windows to calibrated probabilities, decisions and output tables.

Everything that defines a window and its input comes from the checkpoint's sidecar, as
`saimp evaluate` reads it: `model.seq_len`, the normalisation statistics (fitted on the
training split), `config.data.max_gap_bars` with the bar interval `bar_ms`, the class
names, and the optional `calibration` and `decision` sections.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import torch

from src.config import DataConfig
from src.core import constants as C
from src.core.errors import UserError
from src.data.normalize import Normalizer
from src.modelling.evaluation.inference import load_model
from src.modelling.prediction.calibration import apply_calibration
from src.modelling.prediction.decision import decide
from src.modelling.prediction.output import output_schema, prediction_table
from src.modelling.prediction.windows import gather_windows

#: Windows per forward pass unless told otherwise (`--batch-size`).
DEFAULT_BATCH_SIZE = 512


def time_ms(value: Any, name: str) -> int | None:
    """A time bound as UTC epoch ms: None, int epoch ms, an ISO date/datetime string
    (naive means UTC), or a `datetime` / `pandas.Timestamp`. Raises `UserError` naming
    `name` for anything else."""
    from src.data.split import parse_date_ms

    if value is None:
        return None
    if isinstance(value, bool):
        raise UserError(f"{name}: expected a date, got {value!r}")
    if isinstance(value, int | np.integer):
        return int(value)
    if isinstance(value, str):
        return parse_date_ms(value, name)
    if isinstance(value, datetime):  # pandas.Timestamp is a datetime
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return int(round(value.timestamp() * 1000))
    raise UserError(
        f"{name}: expected an ISO date, epoch milliseconds or a datetime, got {value!r}"
    )


def interval_words(bar_ms: int) -> str:
    """`60000` -> `1-minute`, `900000` -> `15-minute`, `3600000` -> `1-hour`."""
    for size, unit in (
        (86_400_000, "day"),
        (3_600_000, "hour"),
        (60_000, "minute"),
        (1000, "second"),
    ):
        if bar_ms % size == 0:
            return f"{bar_ms // size}-{unit}"
    return f"{bar_ms}-ms"


@dataclass
class Predictor:
    """A model and its sidecar (from `load_model`), on `device`, predicting
    `batch_size` windows per forward pass."""

    model: torch.nn.Module
    sidecar: dict[str, Any]
    device: torch.device | str = "cpu"
    batch_size: int = DEFAULT_BATCH_SIZE
    tick: Callable[[], Any] | None = None
    """Called before each forward pass (`saimp predict` passes its `ThreadGovernor`'s
    `tick`, so that CPU threads shrink while other processes use the cores)."""
    seq_len: int = field(init=False)
    bar_ms: int | None = field(init=False)
    """The checkpoint's bar interval (None for sidecars from before it was recorded:
    then the data's is taken)."""
    max_gap_bars: float = field(init=False)
    normalizer: Normalizer = field(init=False)
    features: list[str] = field(init=False)
    class_names: tuple[str, ...] = field(init=False)

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise UserError(f"--batch-size must be >= 1, got {self.batch_size}")
        sc = self.sidecar
        self.device = torch.device(self.device)
        self.model = self.model.to(self.device).eval()
        self.seq_len = int(sc["model"]["seq_len"])
        self.bar_ms = int(sc["bar_ms"]) if sc.get("bar_ms") is not None else None
        data = (sc.get("config") or {}).get("data") or {}
        self.max_gap_bars = float(data.get("max_gap_bars", DataConfig().max_gap_bars))
        self.normalizer = Normalizer.from_dict(sc["normalizer"])
        self.features = [str(f) for f in sc.get("features") or self.normalizer.feature_names]
        self.normalizer.check_features(self.features, "the checkpoint's sidecar")
        self.class_names = tuple(sc.get("class_names") or C.CLASS_NAMES)

    @classmethod
    def load(
        cls,
        checkpoint: Path | str,
        *,
        device: torch.device | str = "cpu",
        batch_size: int = DEFAULT_BATCH_SIZE,
    ) -> Predictor:
        """`load_model(checkpoint)` made a Predictor; raises `CheckpointError` (a
        `UserError`) for a missing checkpoint or sidecar."""
        model, sidecar = load_model(Path(checkpoint))
        return cls(model, sidecar, device=device, batch_size=batch_size)

    @property
    def schema(self) -> pa.Schema:
        return output_schema(self.class_names)

    def max_gap_ms(self, bar_ms: int) -> float:
        """The largest step in ms between consecutive bars of one window."""
        return self.max_gap_bars * bar_ms

    def warm_up(self) -> None:
        """One forward pass on zeros. A process's first pass allocates and picks kernels
        (tens of ms on a CPU), which a live process pays once at start-up; latencies are
        measured after it."""
        n_feat = len(self.features)
        self.logits(np.zeros((self.seq_len, n_feat), np.float32), np.array([self.seq_len - 1]))

    def logits(self, features: np.ndarray, ends: np.ndarray) -> np.ndarray:
        """float32 (len(ends), n_classes): the model's logits for the windows ending at
        rows `ends` of `features` ((n, F) normalised float32), `batch_size` windows
        per forward pass; only one batch of windows is copied at a time."""
        out = np.empty((len(ends), len(self.class_names)), np.float32)
        with torch.inference_mode():
            for at in range(0, len(ends), self.batch_size):
                part = ends[at : at + self.batch_size]
                if self.tick is not None:
                    self.tick()
                x = torch.from_numpy(gather_windows(features, part, self.seq_len))
                out[at : at + len(part)] = self.model(x.to(self.device)).float().cpu().numpy()
        return out

    def probabilities(self, features: np.ndarray, ends: np.ndarray) -> np.ndarray:
        """(len(ends), n_classes) calibrated probabilities (the sidecar's calibration;
        plain softmax without one)."""
        return np.asarray(
            apply_calibration(self.logits(features, ends), self.sidecar.get("calibration")),
            np.float64,
        )

    def table(self, symbol: str, ts_ms: np.ndarray, probs: np.ndarray) -> pa.Table:
        """The output rows for windows ending at `ts_ms` with probabilities `probs`."""
        if len(ts_ms):
            decision = decide(probs, self.sidecar.get("decision"))
        else:
            decision = np.empty(0, np.int8)
        return prediction_table(symbol, ts_ms, probs, decision, self.class_names)
