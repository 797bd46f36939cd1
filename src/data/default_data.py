"""The embedded default dataset: generated and prepared on first use."""

from __future__ import annotations

import logging
from pathlib import Path

import torch.distributed as dist

from src.config import Config
from src.core.constants import DEFAULT_PROCESSED_DIR
from src.data.lake import list_parquet_files
from src.modelling.training.distributed import World

log = logging.getLogger(__name__)


def _has_parquet(path: Path) -> bool:
    return path.is_dir() and any(path.glob("*.parquet"))


def ensure_default_data(cfg: Config, world: World) -> None:
    """Make sure the processed lake exists.

    The default lake (`data/processed`) is generated from synthetic candles when missing
    (by rank 0; the other ranks wait). A lake the user named must exist already.
    """
    data_dir = cfg.paths.data_dir
    if Path(data_dir) != DEFAULT_PROCESSED_DIR:
        list_parquet_files(data_dir)  # a lake the user named: says what is wrong with it
        return
    if _has_parquet(data_dir):
        return
    if world.is_main:
        from src.data.prepare import prepare_lake
        from src.data.synthetic import write_raw

        raw = cfg.paths.raw_dir
        if not _has_parquet(raw):
            log.info(f"[DATA] generating the default synthetic candles in {raw}")
            write_raw(
                raw,
                n_bars=cfg.data.synthetic_bars,
                seed=cfg.data.synthetic_seed,
                bar_minutes=cfg.data.bar_minutes,
            )
        log.info(f"[DATA] preparing {raw} -> {data_dir}")
        prepare_lake(raw, data_dir, label=cfg.label, row_group_rows=cfg.data.row_group_rows)
    if world.distributed:
        dist.barrier()
