"""`python -m src.modelling.train` as a user runs it: files, messages, exit codes."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch

from src.modelling.checkpointing.best import load_state_dict_file
from src.modelling.model import SAIMP, SAIMPConfig
from src.modelling.observability.plots import read_epoch_records

ROOT = Path(__file__).resolve().parents[1]
#: The environment of every training subprocess: the repository importable, one thread.
ENV = {"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"}
#: A small model and short windows: each epoch of the tiny lake takes about a second.
SMALL = [
    "--seq-len", "16",
    "--batch-size", "32",
    "--set", "model.d_model=16",
    "--set", "model.n_heads=2",
    "--set", "model.n_layers=1",
    "--set", "model.d_ff=32",
    "--precision", "fp32",
    "--progress", "lines",
    "--log-every", "50",
]  # fmt: skip


def run_train(*args: str, cwd: Path, timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "src.modelling.train", *args],
        cwd=cwd,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def paths_args(tmp_path: Path, lake: Path) -> list[str]:
    return [
        "--data-dir", str(lake),
        "--checkpoint", str(tmp_path / "data" / "saimp_best.pth"),
        "--logs-dir", str(tmp_path / "logs"),
    ]  # fmt: skip


@pytest.mark.slow
def test_a_run_writes_every_output_and_prints_the_checkpoint_last(tmp_path, tiny_lake):
    result = run_train(*paths_args(tmp_path, tiny_lake), *SMALL, "--epochs", "2", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    best = tmp_path / "data" / "saimp_best.pth"
    assert result.stdout.strip().splitlines()[-1] == str(best)
    for line in ("[EPOCH] Epoch 1/2", "   Batch    0 | Loss: ", "   [RAM] ", "[VAL] recall:"):
        assert line in result.stdout

    sidecar = json.loads(best.with_suffix(".json").read_text())
    assert {"model", "features", "normalizer", "class_names", "split", "epoch", "metrics"} <= set(
        sidecar
    )
    model = SAIMP(SAIMPConfig(**sidecar["model"]))
    model.load_state_dict(load_state_dict_file(best))  # weights only, plain keys

    [log] = (tmp_path / "logs").glob("train_run_*.txt")
    assert log.read_text().count("[EPOCH] Epoch") >= 2  # everything printed is in the log
    assert log.with_suffix(".png").stat().st_size > 10_000
    records = read_epoch_records(log.with_suffix(".jsonl"))
    assert [r["epoch"] for r in records] == [1, 2]
    assert (tmp_path / "data" / "saimp_last.pth").exists()


@pytest.mark.parametrize(
    "args, needle",
    [
        (["--bogus-flag"], "unrecognized arguments: --bogus-flag"),
        (["--epochs", "zero"], "--epochs: train.epochs expects int"),
        (["--data-dir", "no/such/lake"], "--data-dir no/such/lake does not exist"),
    ],
)
def test_user_errors_give_one_line_and_exit_2(args, needle, tmp_path):
    result = run_train(*args, cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip() == result.stderr.strip().splitlines()[0]  # one line
    assert result.stderr.startswith("error: ") and needle in result.stderr
    assert "Traceback" not in result.stderr + result.stdout


def test_a_missing_column_names_the_file_and_keeps_the_checkpoint(tmp_path, tiny_lake):
    lake = tmp_path / "lake"
    shutil.copytree(tiny_lake, lake)
    victim = sorted(lake.glob("*.parquet"))[1]
    table = pq.read_table(victim)
    pq.write_table(table.drop(["label"]), victim, row_group_size=512)
    best = tmp_path / "data" / "saimp_best.pth"
    best.parent.mkdir()
    torch.save({"w": torch.ones(1)}, best)
    before = best.read_bytes()

    result = run_train(*paths_args(tmp_path, lake), *SMALL, cwd=tmp_path)
    assert result.returncode == 2
    [line] = result.stderr.strip().splitlines()
    assert victim.name in line and "label" in line
    assert best.read_bytes() == before
