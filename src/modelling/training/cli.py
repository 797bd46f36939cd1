"""The flags of `saimp train`, turned into a `Config`.

Every setting's flag is generated from its config field (`src.flags`), so the flag, the
TOML key and `--set section.key=value` cannot drift apart. Kept free of heavy imports
so that `--help` answers at the speed of `import torch`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from src.config import MODEL_SIZES, PRESETS, Config, build_config, load_toml
from src.core.errors import ArgumentParser
from src.flags import ConfigFlags, parse_set
from src.modelling.labels import refuse_label_set, refuse_label_table

# What `saimp train` exposes as flags; the labels are made by `saimp prepare` (and
# `--set label.*` or a `[label]` table that changes them is refused: see `labels.py`).
SECTIONS: dict[str, tuple[str, ...] | None] = {
    "paths": None,
    "data": None,
    "model": None,
    "train": None,
    "track": None,
}
_FLAGS: list[ConfigFlags] = []  # the generated flags of the parser built last


def build_parser(prog: str = "saimp train") -> argparse.ArgumentParser:
    p = ArgumentParser(
        prog=prog,
        description="Train SAIMP on the processed Parquet lake and print the best checkpoint's "
        "path last. With no arguments: generate the default synthetic data if missing, then "
        "train with the 'quick' preset. Settings apply in order: preset, --model-size, "
        "--config TOML, --set, then the named flags.",
    )
    p.add_argument(
        "--preset", default="quick", choices=sorted(PRESETS), help="base settings (default: quick)"
    )
    p.add_argument(
        "--model-size", default="cpu", choices=sorted(MODEL_SIZES), help="model size (default: cpu)"
    )
    p.add_argument("--config", type=Path, help="TOML file with [paths] [data] [model] [train] ...")
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
    _FLAGS[:] = [ConfigFlags(p, SECTIONS, Config())]
    return p


def config_from_args(args: argparse.Namespace) -> Config:
    """Preset, then TOML, then --set, then the named flags; bad values name the flag.

    Label settings are refused (`UserError` pointing to `saimp prepare`): the labels
    are the lake's.
    """

    def make(flags: dict) -> Config:
        overrides = parse_set(args.set)
        refuse_label_set(overrides)
        if args.config is not None:
            refuse_label_table(load_toml(args.config), str(args.config))
        for section, values in flags.items():
            overrides.setdefault(section, {}).update(values)
        return build_config(args.preset, args.model_size, args.config, overrides)

    return _FLAGS[0].config(args, make)
