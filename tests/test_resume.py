"""A killed or interrupted run, resumed, ends exactly where an uninterrupted one does."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from src.modelling.checkpointing.last import load_training_state
from src.modelling.observability.plots import figure_data, read_epoch_records
from src.modelling.training.faults import KILL_AT_WINDOW_ENV, KILL_IN_SAVE_ENV
from tests.test_train_cli import ENV, SMALL, paths_args, run_train

pytestmark = pytest.mark.slow

RUN = [*SMALL, "--epochs", "2", "--accumulation-steps", "3", "--checkpoint-every-windows", "4"]


def start(tmp_path: Path, lake: Path, *extra: str, env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "src.modelling.train", *paths_args(tmp_path, lake), *RUN, *extra],
        cwd=tmp_path,
        env={**ENV, **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for(condition, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail("timed out waiting for the training subprocess")
        time.sleep(0.05)


def outcome(tmp_path: Path) -> dict:
    """Final parameters, loop history (wall times left out), best weights, and the plotted
    series of the newest run's JSONL."""
    state, _ = load_training_state(tmp_path / "data" / "saimp_last.pth")
    history = [{k: v for k, v in r.items() if k != "seconds"} for r in state["loop"]["history"]]
    best = torch.load(tmp_path / "data" / "saimp_best.pth", weights_only=True)
    newest = max((tmp_path / "logs").glob("*.jsonl"), key=lambda p: p.stat().st_mtime)
    plotted = figure_data(read_epoch_records(newest))
    return {
        "model": state["model"],
        "history": history,
        "best": best,
        "loop": state["loop"],
        "plotted": plotted,
    }


def assert_same_run(a: dict, b: dict) -> None:
    assert a["history"] == b["history"]
    for name, tensor in a["model"].items():
        assert torch.equal(tensor, b["model"][name]), name
    for name, tensor in a["best"].items():
        assert torch.equal(tensor, b["best"][name]), name
    assert a["loop"]["optimizer_steps"] == b["loop"]["optimizer_steps"]
    assert a["plotted"] == b["plotted"]  # the resumed run's plot shows the whole run


@pytest.fixture(scope="module")
def reference(tmp_path_factory, tiny_lake) -> dict:
    root = tmp_path_factory.mktemp("uninterrupted")
    result = run_train(*paths_args(root, tiny_lake), *RUN, cwd=root)
    assert result.returncode == 0, result.stderr
    return outcome(root)


def resume(tmp_path: Path, lake: Path) -> subprocess.CompletedProcess:
    result = run_train(*paths_args(tmp_path, lake), *RUN, "--resume", "auto", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "[RESUME] continuing from" in result.stdout
    return result


def last_exists(tmp_path: Path) -> bool:
    return (tmp_path / "data" / "saimp_last.pth").exists()


def test_sigkill_during_a_checkpoint_write(tmp_path, tiny_lake, reference):
    proc = start(tmp_path, tiny_lake, env={KILL_IN_SAVE_ENV: "3"})
    proc.communicate(timeout=120)
    assert proc.returncode == -signal.SIGKILL
    resume(tmp_path, tiny_lake)
    assert_same_run(outcome(tmp_path), reference)


@pytest.mark.parametrize("epoch_to_kill", [1, 2])
def test_sigkill_mid_epoch_and_mid_window(tmp_path, tiny_lake, reference, epoch_to_kill):
    # Inside window 6 of the epoch (after a periodic save at window 4), after its first
    # backward pass: mid-epoch and mid-window, at a known place instead of a timed race.
    per_epoch = reference["loop"]["windows_done"] // 2
    window = (epoch_to_kill - 1) * per_epoch + 6
    proc = start(tmp_path, tiny_lake, env={KILL_AT_WINDOW_ENV: str(window)})
    proc.communicate(timeout=120)
    assert proc.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    state, _ = load_training_state(tmp_path / "data" / "saimp_last.pth")
    assert state["loop"]["epoch"] == epoch_to_kill - 1  # killed inside that epoch
    resume(tmp_path, tiny_lake)
    assert_same_run(outcome(tmp_path), reference)


def test_sigterm_saves_exits_143_and_resumes(tmp_path, tiny_lake, reference):
    proc = start(tmp_path, tiny_lake)
    wait_for(lambda: last_exists(tmp_path))
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 143
    assert "SIGTERM received: finished the current step" in out
    assert "--resume auto" in out
    state, _ = load_training_state(tmp_path / "data" / "saimp_last.pth")
    assert state["loop"]["batches_done"] > 0  # saved where it stopped, not at an epoch end
    resume(tmp_path, tiny_lake)
    assert_same_run(outcome(tmp_path), reference)


def test_resume_with_a_different_batch_size_is_refused(tmp_path, tiny_lake):
    proc = start(tmp_path, tiny_lake)
    wait_for(lambda: last_exists(tmp_path))
    proc.kill()
    proc.communicate(timeout=30)
    last = tmp_path / "data" / "saimp_last.pth"
    before = last.read_bytes()
    result = run_train(
        *paths_args(tmp_path, tiny_lake), *RUN, "--batch-size", "16", "--resume", "auto",
        cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 2
    [line] = result.stderr.strip().splitlines()
    assert (
        "cannot resume" in line and "train.batch_size: checkpoint has 32, this run has 16" in line
    )
    assert last.read_bytes() == before


def test_sigint_exits_130(tmp_path, tiny_lake):
    proc = start(tmp_path, tiny_lake)
    wait_for(lambda: last_exists(tmp_path))
    os.kill(proc.pid, signal.SIGINT)
    proc.communicate(timeout=60)
    assert proc.returncode == 130
