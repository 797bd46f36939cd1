"""Export a checkpoint's model: `saimp export` (`python -m src.modelling.export`).

    saimp export [--format onnx] [--checkpoint data/saimp_best.pth]
        [--out data/export/saimp_best.onnx] [--opset 20] [--atol 1e-4]

Writes `FILE.onnx` (input `features` float32 [batch, seq_len, n_features], dynamic
batch; output `logits` float32 [batch, 4]) and `FILE.json` (the checkpoint's sidecar
with an `"export"` section), only after onnxruntime's logits matched PyTorch's on
seeded random windows; prints the largest difference, and the .onnx path last. The
work is in `prediction/onnx_export.py`; ONNX needs the `onnx` extra.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from src.core import constants as C
from src.core.errors import ArgumentParser

FORMATS = ("onnx",)
"""Formats `saimp export` writes; the flag exists so others can come."""


def default_out(checkpoint: Path) -> Path:
    """`data/saimp_best.pth` -> `data/export/saimp_best.onnx` (its sidecar
    `data/export/saimp_best.json` must not be the checkpoint's own)."""
    return Path(checkpoint).parent / "export" / f"{Path(checkpoint).stem}.onnx"


def build_parser(prog: str = "saimp export") -> argparse.ArgumentParser:
    from src.modelling.prediction.onnx_export import (
        DEFAULT_ATOL,
        DEFAULT_OPSET,
        MAX_OPSET,
        MIN_OPSET,
    )

    p = ArgumentParser(
        prog=prog,
        description="Export a checkpoint's model as ONNX with its sidecar. The export is "
        "checked before it is written: onnxruntime (CPU) must reproduce PyTorch's logits on "
        "seeded random windows of batch 1, 7 and 64 within --atol. Writes FILE.onnx and "
        "FILE.json (the checkpoint's sidecar plus an 'export' section) and prints the .onnx "
        "path last. Needs: pip install 'saimp-trainer[onnx]'.",
    )
    p.add_argument("--format", default="onnx", choices=FORMATS, help="export format")
    p.add_argument("--checkpoint", type=Path, default=C.DEFAULT_CHECKPOINT)
    p.add_argument(
        "--out",
        type=Path,
        help="the .onnx file to write; its sidecar goes beside it as .json "
        "(default: export/{checkpoint stem}.onnx beside the checkpoint)",
    )
    p.add_argument(
        "--opset",
        type=int,
        default=DEFAULT_OPSET,
        help=f"ONNX opset, {MIN_OPSET} to {MAX_OPSET}",
    )
    p.add_argument(
        "--atol",
        type=float,
        default=DEFAULT_ATOL,
        help="largest absolute logit difference allowed between onnxruntime and PyTorch",
    )
    return p


def main(argv: list[str] | None = None, prog: str = "saimp export") -> int:
    args = build_parser(prog).parse_args(argv)
    from src.modelling.prediction.onnx_export import export_onnx

    out = args.out if args.out is not None else default_out(args.checkpoint)
    export_onnx(args.checkpoint, out, opset=args.opset, atol=args.atol)
    return 0


if __name__ == "__main__":
    from src.cli import run_module

    run_module(__spec__.name)  # as the module, so its log lines are under `src`
