"""Fitting a checkpoint's calibration and decision rule on its validation split, and
writing them into its sidecar: what `saimp calibrate` and the end of `saimp train` do.

The math is in `calibration.py` and `decision.py` (pure numpy); here: the checkpoint's
model over its own validation windows (the split bounds, normalisation and windows of
its training run, as `saimp evaluate` reads them), then the sidecar rewritten
atomically with its `"calibration"` and `"decision"` sections. The test split is never
read.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from src.modelling.checkpointing.atomic import CheckpointError, atomic_save_json
from src.modelling.checkpointing.best import load_sidecar, load_state_dict_file, sidecar_path
from src.modelling.checkpointing.sidecar import sidecar_class_weights
from src.modelling.prediction import calibration as cal
from src.modelling.prediction import decision as dec

log = logging.getLogger(__name__)

DEFAULT_BATCH_SIZE = 512
SECTIONS = ("calibration", "decision")


@dataclass
class CalibrationResult:
    """What `calibrate_checkpoint` fitted and wrote."""

    sidecar_path: Path
    calibration: dict[str, Any]
    """the sidecar's new `calibration` section"""
    decision: dict[str, Any]
    """the sidecar's new `decision` section"""
    seconds: float
    """wall time of the whole fit, the validation pass included"""
    data_dir: Path | None = None
    """the lake whose validation split was read"""


def fit_sections(
    logits: np.ndarray,
    y: np.ndarray,
    class_weights: list[float] | None,
    objective: str | dec.Objective = dec.DEFAULT_OBJECTIVE,
) -> dict[str, dict[str, Any]]:
    """{"calibration", "decision"} sections from validation logits (N, C) and labels (N,).

    The decision rule is chosen on the calibrated probabilities; its `val` scores also
    record the argmax of the raw logits (`argmax_uncalibrated`), the prediction of a
    sidecar without either section.
    """
    z = np.asarray(logits, np.float64)
    y = np.asarray(y, np.int64)
    calibration = cal.fit_calibration(z, y, class_weights)
    probs = cal.apply_calibration(z, calibration)
    raw = dec.score_of(objective, y, z.argmax(axis=1))
    decision = dec.fit_decision(probs, y, objective, reference={"argmax_uncalibrated": raw})
    return {"calibration": calibration, "decision": decision}


def write_sections(checkpoint: Path, sections: dict[str, Any]) -> Path:
    """Rewrite the checkpoint's sidecar with `sections` set (other keys kept), atomically:
    a failure at any point leaves the previous sidecar whole. Returns the sidecar path."""
    path = sidecar_path(checkpoint)
    sidecar = load_sidecar(checkpoint)
    sidecar.update(sections)
    atomic_save_json(sidecar, path)
    return path


def val_logits(
    checkpoint: Path,
    *,
    data_dir: Path | str | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    device: torch.device | str | None = None,
    tick: Callable[[], Any] | None = None,
) -> tuple[dict[str, Any], np.ndarray, np.ndarray, Path]:
    """(sidecar, logits (N, C) float32, labels (N,) int8, lake) of the checkpoint's
    validation split, streamed in time order. Raises `CheckpointError` for a checkpoint
    without a sidecar beside it, and the `UserError`s of `open_split`."""
    from src.modelling.evaluation.inference import load_model, open_split, predict

    checkpoint = Path(checkpoint)
    if checkpoint.is_file() and not sidecar_path(checkpoint).is_file():
        raise CheckpointError(
            f"--checkpoint: {sidecar_path(checkpoint)} not found; calibrate a best checkpoint "
            "(its .json sidecar beside it, where the calibration is written)"
        )
    model, sidecar = load_model(checkpoint)
    opened = open_split(
        checkpoint,
        model,
        sidecar,
        data_dir=data_dir,
        split="val",
        batch_size=batch_size,
        command="calibrate",
    )
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    preds = predict(model, opened.data.val_dl, device=device, tick=tick)
    if preds.y_true.size < 2:
        raise CheckpointError(
            f"--checkpoint: the validation split of {opened.data_dir} has "
            f"{preds.y_true.size} window(s); calibration needs at least 2"
        )
    return sidecar, preds.logits, preds.y_true, opened.data_dir


def calibrate_checkpoint(
    checkpoint: Path | str,
    *,
    data_dir: Path | str | None = None,
    objective: str | dec.Objective = dec.DEFAULT_OBJECTIVE,
    batch_size: int = DEFAULT_BATCH_SIZE,
    device: torch.device | str | None = None,
    also: Iterable[Path] = (),
    tick: Callable[[], Any] | None = None,
) -> CalibrationResult:
    """Fit the checkpoint's calibration and decision rule on its validation split and
    write them into its sidecar (and into the sidecars of `also`: copies of the same
    weights). `data_dir`: default, the lake the checkpoint trained on; `tick`: called
    before each batch of the validation pass (a `ThreadGovernor`'s)."""
    started = time.perf_counter()
    checkpoint = Path(checkpoint)
    dec.resolve_objective(objective)  # a bad --objective before any work
    sidecar, logits, y, lake = val_logits(
        checkpoint, data_dir=data_dir, batch_size=batch_size, device=device, tick=tick
    )
    sections = fit_sections(logits, y, sidecar_class_weights(sidecar), objective)
    path = write_sections(checkpoint, sections)
    for other in also:
        write_sections(Path(other), sections)
    return CalibrationResult(
        path, sections["calibration"], sections["decision"], time.perf_counter() - started, lake
    )


def same_weights(a: Path, b: Path) -> bool:
    """Whether two best checkpoints hold the same tensors (False if either is unreadable)."""
    try:
        sa, sb = load_state_dict_file(a), load_state_dict_file(b)
    except CheckpointError:
        return False
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def calibrate_after_training(
    best: Path,
    copies: Iterable[Path],
    *,
    data_dir: Path,
    device: torch.device | str | None = None,
    say: Callable[[str], None] = log.info,
) -> CalibrationResult | None:
    """The end of `saimp train` (rank 0): calibrate the run's best checkpoint `best` and
    write the same sections into each of `copies` that holds the same weights (the run's
    own best file and the shared one). Never raises for a failed fit: one warning, and
    the sidecars stay as they were (each is rewritten atomically, after the fit)."""
    try:
        same = [
            Path(c)
            for c in copies
            if Path(c) != Path(best) and Path(c).is_file() and same_weights(best, c)
        ]
        result = calibrate_checkpoint(best, data_dir=data_dir, device=device, also=same)
    except Exception as err:  # never lose a good checkpoint to its calibration
        first = (str(err).splitlines() or [type(err).__name__])[0]
        log.warning(
            f"[CALIBRATE] {best} kept uncalibrated: {type(err).__name__}: {first}; "
            f"retry with saimp calibrate --checkpoint {best}"
        )
        return None
    say(summary_line(result))
    return result


def summary_line(result: CalibrationResult) -> str:
    """One line: the calibration's val log-loss and ECE before and after, and the rule."""
    c, d = result.calibration, result.decision
    before, after = c["val"]["none"], c["val_fit"]
    objective = d.get("objective", dec.DEFAULT_OBJECTIVE)
    return (
        f"[CALIBRATE] {c['method']}: val log-loss {before['log_loss']:.4f} -> "
        f"{after['log_loss']:.4f}, ECE {before['ece']:.4f} -> {after['ece']:.4f} | decision "
        f"{describe_rule(d)}: val {objective} {d['val'].get(d['rule'], d['val']['argmax']):.3f} "
        f"(argmax {d['val']['argmax']:.3f}, uncalibrated argmax "
        f"{d['val'].get('argmax_uncalibrated', float('nan')):.3f}) | "
        f"{result.seconds:.1f}s | {result.sidecar_path}"
    )


def describe_rule(decision: dict[str, Any]) -> str:
    """ "thresholds (Stop >= 0.43, Long >= 0.18, SuperLong >= 0.15; else Neutro)" or "argmax"."""
    if decision.get("rule") != "thresholds":
        return "argmax"
    parts = ", ".join(f"{n} >= {t:.3f}" for n, t in decision["thresholds"].items())
    return f"thresholds ({parts}; else {decision.get('fallback', 'Neutro')})"
