"""Command-line flags of `python -m src.modelling.train`, turned into a `Config`.

Kept free of heavy imports so that `--help` answers at the speed of `import torch`.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from src.config import MODEL_SIZES, PRESETS, Config, build_config
from src.core.errors import ArgumentParser, UserError

# flag -> (section, field): each flag overrides one config field.
FLAG_FIELDS: dict[str, tuple[str, str]] = {
    "data_dir": ("paths", "data_dir"),
    "raw_dir": ("paths", "raw_dir"),
    "checkpoint": ("paths", "checkpoint"),
    "logs_dir": ("paths", "logs_dir"),
    "epochs": ("train", "epochs"),
    "lr": ("train", "lr"),
    "weight_decay": ("train", "weight_decay"),
    "batch_size": ("train", "batch_size"),
    "accumulation_steps": ("train", "accumulation_steps"),
    "precision": ("train", "precision"),
    "early_stopping_patience": ("train", "early_stopping_patience"),
    "max_grad_norm": ("train", "max_grad_norm"),
    "select_metric": ("train", "select_metric"),
    "log_every": ("train", "log_every"),
    "micro_batch": ("train", "micro_batch"),
    "checkpoint_every_windows": ("train", "checkpoint_every_windows"),
    "seed": ("train", "seed"),
    "seq_len": ("data", "seq_len"),
    "num_workers": ("data", "num_workers"),
    "progress": ("track", "progress"),
    "tensorboard": ("track", "tensorboard"),
    "mlflow": ("track", "mlflow"),
}


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(
        prog="python -m src.modelling.train",
        description="Train SAIMP on the processed Parquet lake and print the best checkpoint's "
        "path. With no arguments: generate the default synthetic data if missing, then train "
        "with the 'quick' preset.",
    )
    p.add_argument("--preset", default="quick", choices=sorted(PRESETS), help="base settings")
    p.add_argument("--model-size", default="cpu", choices=sorted(MODEL_SIZES), help="model size")
    p.add_argument("--config", type=Path, help="TOML file with [paths] [data] [model] [train]")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="override any config field, e.g. --set model.d_model=64 (repeatable)",
    )
    p.add_argument(
        "--resume",
        metavar="auto|PATH",
        help="continue a killed or interrupted run from its last checkpoint (auto: "
        "data/saimp_last.pth beside --checkpoint, if it exists)",
    )
    g = p.add_argument_group("common settings (override the preset and the TOML file)")
    g.add_argument("--data-dir", help="processed lake (default data/processed)")
    g.add_argument("--raw-dir", help="raw candles for the default data (data/raw/synthetic)")
    g.add_argument("--checkpoint", help="best checkpoint path (default data/saimp_best.pth)")
    g.add_argument("--logs-dir", help="where the run's .txt/.jsonl/.png go (default logs)")
    g.add_argument("--epochs", help="passes over the training split")
    g.add_argument("--lr", help="AdamW learning rate")
    g.add_argument("--weight-decay", help="AdamW weight decay")
    g.add_argument("--batch-size", help="physical (micro-)batch size")
    g.add_argument("--accumulation-steps", help="micro-batches per optimizer step")
    g.add_argument("--precision", help="auto, fp32, bf16 or fp16")
    g.add_argument("--early-stopping-patience", help="epochs without improvement before stopping")
    g.add_argument("--max-grad-norm", help="clip the gradient norm to this")
    g.add_argument("--select-metric", help="val_loss (default) or val_macro_f1")
    g.add_argument("--log-every", help="print a batch line every N micro-batches")
    g.add_argument(
        "--micro-batch", help="samples per forward pass: auto (default), loader, or a number"
    )
    g.add_argument(
        "--checkpoint-every-windows", help="write the resumable last checkpoint every N windows"
    )
    g.add_argument("--seed", help="seed for init and shuffling")
    g.add_argument("--seq-len", help="bars per window")
    g.add_argument("--num-workers", help="DataLoader workers per process")
    g.add_argument("--progress", help="auto (bar on a terminal), bar, or lines")
    g.add_argument(
        "--tensorboard", action="store_const", const=True, help="also log to TensorBoard (./runs)"
    )
    g.add_argument(
        "--mlflow", action="store_const", const=True, help="also log to MLflow (./mlruns)"
    )
    return p


def _parse_set(items: list[str]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for item in items:
        key, sep, value = item.partition("=")
        section, dot, name = key.partition(".")
        if not sep or not dot or not section or not name:
            raise UserError(f"--set expects SECTION.KEY=VALUE, got {item!r}")
        out.setdefault(section, {})[name] = value
    return out


def config_from_args(args: argparse.Namespace) -> Config:
    """Preset, then TOML, then --set, then the named flags; bad values name the flag."""
    overrides = _parse_set(args.set)
    for flag, (section, name) in FLAG_FIELDS.items():
        value = getattr(args, flag)
        if value is not None:
            overrides.setdefault(section, {})[name] = value
    try:
        return build_config(args.preset, args.model_size, args.config, overrides)
    except ValueError as err:
        message = str(err)
        for flag, (section, name) in FLAG_FIELDS.items():
            if getattr(args, flag) is not None and message.startswith(f"{section}.{name} "):
                message = f"--{flag.replace('_', '-')}: {message}"
                break
        raise UserError(message) from None
