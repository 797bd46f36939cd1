"""Shared fixtures: one torch thread, a tiny synthetic raw dataset and its prepared lake.

Both are built once per test session in a temporary directory. The dataset has
`TINY_SYMBOLS` symbols of `TINY_BARS` 15-minute bars each (2024-01-01 onwards, so
January to March: three monthly files per symbol), and the lake is written in row
groups of `TINY_ROW_GROUP_ROWS` rows, so every file has several row groups. Tests must
treat both directories as read-only (copy them to modify).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest
import torch

from src.config import LabelConfig
from src.core.logs import ROOT
from src.data.prepare import prepare_lake
from src.data.synthetic import write_raw

TINY_BARS = 7000
TINY_BAR_MINUTES = 15
TINY_SYMBOLS = 2
TINY_SEED = 7
TINY_ROW_GROUP_ROWS = 512


@pytest.fixture(autouse=True, scope="session")
def one_torch_thread():
    """One intra-op thread in the test process: the machine has 2 cores, and the DDP and
    subprocess tests run beside it; two threads each oversubscribe them (~10x slower)."""
    before, env = torch.get_num_threads(), os.environ.get("OMP_NUM_THREADS")
    torch.set_num_threads(1)
    os.environ["OMP_NUM_THREADS"] = "1"  # what an in-process `saimp train` budgets
    yield
    torch.set_num_threads(before)
    if env is None:
        os.environ.pop("OMP_NUM_THREADS", None)
    else:
        os.environ["OMP_NUM_THREADS"] = env


@pytest.fixture(autouse=True)
def fresh_logging():
    """Each test starts and ends with the `src` logger as a new process has it: a command's
    `setup_console` in one test must not silence `caplog` in the next."""
    yield
    logger = logging.getLogger(ROOT)
    for h in list(logger.handlers):
        logger.removeHandler(h)
    for h in list(logging.getLogger("py.warnings").handlers):
        logging.getLogger("py.warnings").removeHandler(h)
    logger.propagate = True
    logger.setLevel(logging.NOTSET)
    logging.captureWarnings(False)


@pytest.fixture(scope="session")
def tiny_raw_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Raw synthetic candles: `SYNTH1_2024-01.parquet` ... `SYNTH2_2024-03.parquet`."""
    raw = tmp_path_factory.mktemp("tiny") / "raw"
    write_raw(
        raw,
        n_bars=TINY_BARS,
        seed=TINY_SEED,
        bar_minutes=TINY_BAR_MINUTES,
        mode="planted",
        n_symbols=TINY_SYMBOLS,
    )
    return raw


@pytest.fixture(scope="session")
def tiny_lake(tiny_raw_dir: Path) -> Path:
    """The processed lake of `tiny_raw_dir` (default labels, 512-row row groups)."""
    lake = tiny_raw_dir.parent / "lake"
    prepare_lake(
        tiny_raw_dir,
        lake,
        label=LabelConfig(),
        row_group_rows=TINY_ROW_GROUP_ROWS,
        log=lambda _msg: None,
    )
    return lake
