"""Where a report about a checkpoint is written: beside it, or in `--out`."""

from __future__ import annotations

from pathlib import Path


def report_paths(
    checkpoint: Path, split: str, out_dir: Path | None, kind: str = "report"
) -> tuple[Path, Path]:
    """(JSON, PNG): `{checkpoint stem}_{split}_{kind}` in `out_dir`, else beside the
    checkpoint (`kind`: "report" for evaluate, "backtest" for backtest)."""
    base = Path(out_dir) if out_dir is not None else Path(checkpoint).parent
    stem = f"{Path(checkpoint).stem}_{split}_{kind}"
    return base / f"{stem}.json", base / f"{stem}.png"
