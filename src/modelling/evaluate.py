"""Evaluate a checkpoint on a split: `python -m src.modelling.evaluate`.

    python -m src.modelling.evaluate [--checkpoint data/saimp_best.pth] [--data DIR]
        [--split test] [--out DIR] [--batch-size 512] [--device auto] [--null-draws 1000]

The model and the normalisation are rebuilt from the checkpoint's JSON sidecar (weights
loaded with `weights_only=True`). The split is the one training used: its bounds come
from the sidecar, never from the extent of the lake being read, so evaluating on a lake
that grew since training still tests on the same time range (plus any later bars).

Writes `{checkpoint_stem}_{split}_report.json` and `.png` (confusion heatmap) next to
the checkpoint, or in `--out`, prints a table, and prints the JSON's path last. The
numbers are computed in `src.modelling.report` (see there for the baselines and the
chance level).
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from src.config import Config, DataConfig, TrainConfig
from src.core import constants as C
from src.core.errors import ArgumentParser, DataError, UserError, run_cli
from src.modelling import report as rp
from src.modelling.checkpoint import (
    CheckpointError,
    atomic_save_json,
    atomic_write,
    load_sidecar,
    load_state_dict_file,
    sidecar_path,
)
from src.modelling.model import SAIMP, SAIMPConfig

DEFAULT_BATCH_SIZE = 512
DEFAULT_NULL_DRAWS = 1000
SPLIT_NAMES = ("train", "val", "test")


@dataclass
class Predictions:
    """Labels and argmax predictions of a split, in stream (chronological) order."""

    y_true: np.ndarray
    """int8 (N,)"""
    y_pred: np.ndarray
    """int8 (N,)"""
    loss_sum: float = 0.0
    """Sum over samples of weight[y] * cross-entropy."""
    weight_sum: float = 0.0
    """Sum over samples of weight[y] (the normaliser of a weighted mean)."""

    @property
    def loss(self) -> float:
        return self.loss_sum / self.weight_sum if self.weight_sum else math.nan


@dataclass
class EvalResult:
    report: dict[str, Any]
    json_path: Path
    png_path: Path


# ---------------------------------------------------------------------------- loading


def load_model(checkpoint: Path) -> tuple[SAIMP, dict[str, Any]]:
    """The model with the checkpoint's weights (eval mode, CPU) and its sidecar."""
    checkpoint = Path(checkpoint)
    if not checkpoint.is_file():
        raise CheckpointError(
            f"--checkpoint: {checkpoint} not found; train first (python -m src.modelling.train) "
            "or pass the path of a best checkpoint"
        )
    sidecar = load_sidecar(checkpoint)
    for key in ("model", "normalizer", "split"):
        if not isinstance(sidecar.get(key), dict):
            raise CheckpointError(
                f"{sidecar_path(checkpoint)} has no {key!r} section; evaluate a checkpoint "
                "written by python -m src.modelling.train"
            )
    try:
        cfg = SAIMPConfig(**sidecar["model"])
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"{sidecar_path(checkpoint)}: bad model config: {err}") from None
    model = SAIMP(cfg)
    state = load_state_dict_file(checkpoint)
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        first = str(err).splitlines()[0][:200]
        raise CheckpointError(
            f"{checkpoint} does not match the model described by {sidecar_path(checkpoint)}: "
            f"{first}"
        ) from None
    return model.eval(), sidecar


def split_bounds_of(sidecar: dict[str, Any], where: Path) -> Any:
    from src.data.split import SplitBounds

    s = sidecar["split"]
    try:
        return SplitBounds(
            val_start_ms=int(s["val_start_ms"]), test_start_ms=int(s["test_start_ms"])
        )
    except (KeyError, TypeError, ValueError) as err:
        raise CheckpointError(f"{where}: malformed 'split' section ({err})") from None


def eval_config(sidecar: dict[str, Any], data_dir: Path, batch_size: int, bounds: Any) -> Config:
    """A Config that makes `build_data` read `data_dir` with the training run's split."""
    from src.data.split import iso

    trained = (sidecar.get("config") or {}).get("data", {})
    known = {f.name for f in dataclasses.fields(DataConfig)}
    data_fields = {k: v for k, v in trained.items() if k in known}
    data_fields.update(
        seq_len=int(sidecar["model"]["seq_len"]),
        val_start=iso(bounds.val_start_ms),
        test_start=iso(bounds.test_start_ms),
        num_workers=0,
    )
    try:
        data = DataConfig(**data_fields)
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"the sidecar's data settings are not usable: {err}") from None
    cfg = Config(data=data, train=TrainConfig(batch_size=batch_size))
    cfg.paths.data_dir = Path(data_dir)
    return cfg


# ---------------------------------------------------------------------------- predicting


@torch.no_grad()
def predict(
    model: torch.nn.Module,
    batches: Iterable[Any],
    *,
    device: torch.device | str = "cpu",
    class_weights: Iterable[float] | None = None,
) -> Predictions:
    """Run `model` over `(x, y, ...)` batches: argmax predictions and the weighted loss."""
    device = torch.device(device)
    model = model.to(device).eval()
    weight = (
        torch.tensor(list(class_weights), dtype=torch.float32)
        if class_weights is not None
        else None
    )
    ys: list[np.ndarray] = []
    ps: list[np.ndarray] = []
    loss_sum = weight_sum = 0.0
    for batch in batches:
        x, y = batch[0].to(device, non_blocking=True), batch[1].to(torch.int64)
        logits = model(x).float().cpu()  # (B, n_classes)
        ys.append(y.numpy().astype(np.int8))
        ps.append(logits.argmax(dim=1).numpy().astype(np.int8))
        if weight is not None:
            loss_sum += float(F.cross_entropy(logits, y, weight=weight, reduction="sum"))
            weight_sum += float(weight[y].sum())
    empty = np.empty(0, np.int8)
    return Predictions(
        np.concatenate(ys) if ys else empty,
        np.concatenate(ps) if ps else empty,
        loss_sum,
        weight_sum,
    )


# ---------------------------------------------------------------------------- files


def report_paths(checkpoint: Path, split: str, out_dir: Path | None) -> tuple[Path, Path]:
    base = Path(out_dir) if out_dir is not None else Path(checkpoint).parent
    stem = f"{Path(checkpoint).stem}_{split}_report"
    return base / f"{stem}.json", base / f"{stem}.png"


def plot_confusion(report: dict[str, Any], png: Path, title: str = "") -> Path:
    """Heatmap of the confusion matrix: colour = row-normalised %, text = count and %."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = report["class_names"]
    cm = np.asarray(report["confusion_matrix"], dtype=np.float64)
    rows = cm.sum(axis=1, keepdims=True)
    pct = np.divide(100 * cm, rows, out=np.zeros_like(cm), where=rows > 0)
    fig, ax = plt.subplots(figsize=(6.6, 5.6))
    im = ax.imshow(pct, cmap="Blues", vmin=0, vmax=100)
    for i in range(len(names)):
        for j in range(len(names)):
            ax.text(
                j,
                i,
                f"{int(cm[i, j]):,}\n{pct[i, j]:.1f}%",
                ha="center",
                va="center",
                fontsize=9,
                color="white" if pct[i, j] > 55 else "black",
            )
    ax.set_xticks(range(len(names)), names)
    ax.set_yticks(
        range(len(names)), [f"{n}\n(n={int(r):,})" for n, r in zip(names, rows[:, 0], strict=True)]
    )
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    rnd = report["baselines"]["random"]
    ax.set_title(
        title
        or f"{report.get('split', '')}: macro-F1 {report['macro_f1']:.3f} (random "
        f"{rnd['macro_f1']:.3f}), balanced acc {report['balanced_accuracy']:.3f}",
        fontsize=10,
    )
    fig.colorbar(im, ax=ax, label="% of the true class (row)")
    fig.tight_layout()
    atomic_write(png, lambda fh: fig.savefig(fh, format="png", dpi=110))
    plt.close(fig)
    return png


# ---------------------------------------------------------------------------- pipeline


def _horizon_bars(index: Any, sidecar: dict[str, Any]) -> int:
    label = (index.meta or {}).get("label") or (sidecar.get("config") or {}).get("label") or {}
    minutes = label.get("horizon_minutes")
    if not minutes or not index.bar_ms:
        return 0
    return int(math.ceil(minutes * 60_000 / index.bar_ms))


def _train_counts(
    sidecar: dict[str, Any], summary: dict[str, Any]
) -> tuple[np.ndarray | None, str]:
    recorded = (sidecar.get("label_counts") or {}).get("train")
    if recorded is not None and sum(recorded) > 0:
        return np.asarray(recorded, dtype=np.int64), "training split (checkpoint sidecar)"
    lake = (summary.get("label_counts") or {}).get("train")
    if lake is not None and sum(lake) > 0:
        return np.asarray(lake, dtype=np.int64), "training split (lake, training time range)"
    return None, "evaluated split"


def evaluate_checkpoint(
    checkpoint: Path | str = C.DEFAULT_CHECKPOINT,
    *,
    data_dir: Path | str | None = None,
    split: str = "test",
    out_dir: Path | str | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    device: torch.device | str | None = None,
    null_draws: int = DEFAULT_NULL_DRAWS,
    seed: int = 0,
    log: Callable[[str], None] = print,
) -> EvalResult:
    """Rebuild the checkpoint's model and normalisation, stream `split`, write the report."""
    from src.data.dataloader import build_data
    from src.data.normalize import Normalizer

    if split not in SPLIT_NAMES:
        raise UserError(f"--split: unknown split {split!r}; choose one of {', '.join(SPLIT_NAMES)}")
    if batch_size < 1:
        raise UserError(f"--batch-size must be >= 1, got {batch_size}")
    checkpoint = Path(checkpoint)
    started = time.perf_counter()
    model, sidecar = load_model(checkpoint)
    bounds = split_bounds_of(sidecar, sidecar_path(checkpoint))
    if data_dir is None:
        data_dir = (sidecar.get("config") or {}).get("paths", {}).get("data_dir")
        if data_dir is None:
            raise UserError("--data: the sidecar does not name the training lake; pass --data DIR")
    data_dir = Path(data_dir)
    normalizer = Normalizer.from_dict(sidecar["normalizer"])
    cfg = eval_config(sidecar, data_dir, batch_size, bounds)
    try:
        data = build_data(cfg, splits=(split,), normalizer=normalizer)
    except DataError as err:
        raise DataError(f"{err} [split bounds from {sidecar_path(checkpoint)}]") from None
    if (data.bounds.val_start_ms, data.bounds.test_start_ms) != (
        bounds.val_start_ms,
        bounds.test_start_ms,
    ):  # the ISO round trip must be exact; never evaluate on a shifted split
        raise RuntimeError(f"split bounds {data.bounds} differ from the checkpoint's {bounds}")
    if data.index.num_features != model.cfg.n_features:
        raise DataError(
            f"{data_dir}: {data.index.num_features} features per bar, the checkpoint expects "
            f"{model.cfg.n_features}; evaluate on a lake prepared with the same features"
        )

    # Fixed, chronological order for every split (train is built shuffled for training):
    # the chance level shifts predictions along time.
    getattr(data, split).shuffle = False
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    weights = (sidecar.get("config") or {}).get("train", {}).get("class_weights")
    preds = predict(model, getattr(data, f"{split}_dl"), device=device, class_weights=weights)
    expected = data.index.num_windows(split)
    if preds.y_true.size != expected:
        raise RuntimeError(f"streamed {preds.y_true.size} windows of {split}, expected {expected}")

    train_counts, counts_from = _train_counts(sidecar, data.summary)
    json_path, png_path = report_paths(checkpoint, split, Path(out_dir) if out_dir else None)
    report = rp.build_report(
        preds.y_true,
        preds.y_pred,
        class_names=tuple(sidecar.get("class_names") or C.CLASS_NAMES),
        train_counts=train_counts,
        train_counts_from=counts_from,
        null_draws=null_draws,
        min_shift=_horizon_bars(data.index, sidecar) + model.cfg.seq_len,
        seed=seed,
        extra={
            "checkpoint": str(checkpoint),
            "epoch": sidecar.get("epoch"),
            "split": split,
            "data_dir": str(data_dir),
            "split_bounds": bounds.to_dict(),
            "split_bounds_from": str(sidecar_path(checkpoint)),
            "loss": preds.loss if weights is not None else None,
            "loss_class_weights": weights,
            "png": str(png_path),
        },
    )
    plot_confusion(report, png_path)
    atomic_save_json(report, json_path)

    log(
        f"[EVAL] {checkpoint} (epoch {sidecar.get('epoch')}) on the {split} split of {data_dir}: "
        f"{report['n_samples']:,} windows | bounds val {bounds.to_dict()['val_start']}, "
        f"test {bounds.to_dict()['test_start']} (from the sidecar) | device {device}"
    )
    log(rp.format_report(report))
    if report["loss"] is not None:
        log(f"loss (class-weighted cross-entropy, as val_loss in training): {report['loss']:.4f}")
    log(f"[EVAL] heatmap {png_path} | {time.perf_counter() - started:.1f}s")
    log(str(json_path))
    return EvalResult(report, json_path, png_path)


# ---------------------------------------------------------------------------- command line


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(
        prog="python -m src.modelling.evaluate",
        description="Evaluate a best checkpoint on a split of the lake: per-class precision, "
        "recall and F1, macro-F1, balanced accuracy, confusion matrix, and the same numbers "
        "for a majority-class and a random (class-frequency) baseline. Writes "
        "{stem}_{split}_report.json and .png and prints the JSON's path last.",
    )
    p.add_argument("--checkpoint", type=Path, default=C.DEFAULT_CHECKPOINT)
    p.add_argument(
        "--data", type=Path, help="processed lake (default: the one the checkpoint trained on)"
    )
    p.add_argument("--split", default="test", choices=SPLIT_NAMES)
    p.add_argument("--out", type=Path, help="report directory (default: beside the checkpoint)")
    p.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE)
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument(
        "--null-draws",
        type=int,
        default=DEFAULT_NULL_DRAWS,
        help="shifted-prediction draws for the chance level of macro-F1 (0: skip)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the chance-level draws")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    device = None if args.device == "auto" else args.device
    if device is not None:
        try:
            torch.device(device)
        except RuntimeError:
            raise UserError(f"--device: unknown device {device!r}") from None
    if args.null_draws < 0:
        raise UserError(f"--null-draws must be >= 0, got {args.null_draws}")
    evaluate_checkpoint(
        args.checkpoint,
        data_dir=args.data,
        split=args.split,
        out_dir=args.out,
        batch_size=args.batch_size,
        device=device,
        null_draws=args.null_draws,
        seed=args.seed,
    )
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
