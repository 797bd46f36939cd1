"""Runs that never lose a better model, never crown a broken one, and fail before the work."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from src.core.errors import UserError
from src.core.paths import writable_dir, writable_file
from src.core.threads import thread_budget
from src.modelling.checkpointing.best import load_state_dict_file, sidecar_path
from src.modelling.checkpointing.manager import CheckpointManager
from src.modelling.train import TrainingError
from tests.helpers import tiny_model
from tests.test_train_cli import SMALL, paths_args, run_train
from tests.test_train_loop import run, scripted_validation

SIDECAR = {
    "model": {"d_model": 8, "seq_len": 6},
    "features": ["a", "b"],
    "bar_ms": 60_000,
    "split": {"val_start_ms": 1, "test_start_ms": 2},
    "lake": {"files": 3, "rows": 1000},
    "config": {"label": {"horizon_minutes": 120}, "train": {"lr": 1e-3}},
}


def new_run(tmp_path: Path, name: str, sidecar=SIDECAR, **kw) -> CheckpointManager:
    return CheckpointManager(
        tmp_path / "data" / "best.pth",
        sidecar=sidecar,
        run_best=tmp_path / "runs" / name / "best.pth",
        **kw,
    )


def save(manager: CheckpointManager, val_loss: float, seed: int = 0) -> Path:
    return manager.save_best(tiny_model(seed), 1, "val_loss", {"val_loss": val_loss})


# -- the shared best ---------------------------------------------------------------------------


def test_a_worse_run_keeps_the_shared_best_and_a_better_one_replaces_it(tmp_path):
    first = new_run(tmp_path, "a")
    assert save(first, 0.954) == first.best_path and first.kept_message is None
    shared = first.best_path.read_bytes()

    worse = new_run(tmp_path, "b")
    assert save(worse, 1.354, seed=1) == tmp_path / "runs" / "b" / "best.pth"
    assert first.best_path.read_bytes() == shared  # not clobbered
    assert worse.run_best.is_file() and worse.result_path == worse.run_best
    assert "val_loss 0.9540 (epoch 1 of an earlier run) is better than this run's 1.3540" in (
        worse.kept_message
    )

    # Lower validation loss with another learning rate: comparable, better, replaces.
    better = new_run(tmp_path, "c", sidecar={**SIDECAR, "config": {**SIDECAR["config"]}})
    assert save(better, 0.5, seed=2) == better.best_path
    assert better.best_path.read_bytes() != shared and better.kept_message is None
    assert json.loads(sidecar_path(better.best_path).read_text())["metrics"]["val_loss"] == 0.5


def test_a_model_of_other_data_or_shape_is_kept_unless_asked(tmp_path):
    save(new_run(tmp_path, "a"), 0.9)
    shared = (tmp_path / "data" / "best.pth").read_bytes()
    other = new_run(tmp_path, "b", sidecar={**SIDECAR, "model": {"d_model": 64, "seq_len": 6}})
    save(other, 0.1, seed=1)  # far better, but not comparable
    assert (tmp_path / "data" / "best.pth").read_bytes() == shared
    assert "other data, labels or model shape (model.d_model 8 vs 64)" in other.kept_message
    forced = new_run(tmp_path, "c", sidecar=other.sidecar, replace_best=True)
    assert save(forced, 2.0, seed=2) == forced.best_path
    assert (tmp_path / "data" / "best.pth").read_bytes() != shared


@pytest.mark.slow
def test_a_second_cli_run_that_is_worse_says_where_its_model_went(tmp_path, tiny_lake):
    first = run_train(*paths_args(tmp_path, tiny_lake), *SMALL, "--epochs", "2", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    best = tmp_path / "data" / "saimp_best.pth"
    kept = best.read_bytes()
    # lr 0 keeps the initial weights: a worse model on the same data and shape.
    second = run_train(*paths_args(tmp_path, tiny_lake), *SMALL, "--lr", "1e-12", cwd=tmp_path)
    assert second.returncode == 0, second.stderr
    assert best.read_bytes() == kept
    printed = second.stdout.strip().splitlines()[-1]  # runs/{run name}/best.pth
    own = tmp_path / printed
    assert own.parent.parent == tmp_path / "runs" and own.is_file()
    [line] = [ln for ln in second.stderr.splitlines() if "kept" in ln]
    assert line.startswith(f"warning: kept {best}: its val_loss ") and printed in line
    # The first run's resumable state was moved into its own folder, not overwritten.
    [earlier] = [p for p in (tmp_path / "runs").glob("*/last.pth")]
    assert f"kept the earlier run's resumable state as {earlier.relative_to(tmp_path)}" in (
        second.stdout
    )


def test_labels_compare_as_the_lake_records_them(tmp_path):
    """A sidecar from before the lake's labels were recorded (only its config's, without
    `barriers`) compares equal to a new one of the same fixed barriers; other labels do
    not, and the shared best is kept."""
    fixed = {"horizon_minutes": 120, "barriers": "fixed", "upper1_pct": 0.8}
    fixed |= {"upper2_pct": 1.6, "lower_pct": 0.75}
    save(new_run(tmp_path, "a"), 0.9)  # SIDECAR: config.label {"horizon_minutes": 120}
    same = new_run(tmp_path, "b", sidecar={**SIDECAR, "label": fixed})
    assert save(same, 0.5, seed=1) == same.best_path
    other = new_run(tmp_path, "c", sidecar={**SIDECAR, "label": {**fixed, "upper1_pct": 1.2}})
    save(other, 0.1, seed=2)
    assert "(label.upper1_pct 0.8 vs 1.2)" in other.kept_message


def test_a_new_run_moves_an_earlier_resumable_state_into_its_run_folder(tmp_path):
    first = new_run(tmp_path, "a")
    first.save_last({"loop": {"epoch": 1}})
    first.save_last({"loop": {"epoch": 2}})  # and a .prev
    kept = new_run(tmp_path, "b").keep_earlier_last()
    assert kept == tmp_path / "runs" / "a" / "last.pth"
    assert not first.last_path.exists()
    assert torch.load(kept, weights_only=True)["loop"] == {"epoch": 2}
    assert kept.with_name("last.pth.prev").exists()
    assert new_run(tmp_path, "c").keep_earlier_last() is None  # nothing left to keep


def test_a_library_call_keeps_a_better_model_at_its_path_too(tmp_path, monkeypatch):
    scripted_validation(monkeypatch, [0.5, 0.9])  # first run 0.5, second run 0.9
    first, _, _, _ = run(tmp_path, 1)
    kept = first.read_bytes()
    second, _, _, _ = run(tmp_path, 1)
    assert first.read_bytes() == kept
    assert second.parent == tmp_path and second.name.startswith("best_") and second.is_file()


def test_a_library_resume_refuses_a_changed_accumulation(tmp_path):
    from tests.helpers import make_batches, sgd_train

    batches = make_batches([[0, 1, 2, 3]] * 4, seed=3)
    sgd_train(tiny_model(3), batches, tmp_path, accumulation_steps=1)
    with pytest.raises(TrainingError, match="train.accumulation_steps: checkpoint has 1"):
        sgd_train(tiny_model(3), batches, tmp_path, accumulation_steps=2, resume="auto")


# -- non-finite means failed ------------------------------------------------------------------


def test_a_diverged_model_is_never_best_whatever_the_metric(tmp_path, monkeypatch):
    nan = math.nan
    scripted_validation(monkeypatch, [nan, nan], f1s=[0.5, 0.6])
    with pytest.raises(TrainingError, match="no epoch had a finite"):
        run(tmp_path, 2, select_metric="val_macro_f1")
    assert not (tmp_path / "best.pth").exists()


def test_a_finite_epoch_after_a_diverged_one_is_chosen(tmp_path, monkeypatch):
    scripted_validation(monkeypatch, [math.nan, 1.2], f1s=[0.9, 0.2])
    path, hooks, state, _ = run(tmp_path, 2, select_metric="val_macro_f1")
    assert [epoch for epoch, _ in hooks.saved] == [2] and state.best_metric == 0.2


# -- fail before the work -----------------------------------------------------------------------


def test_probes_name_the_flag_and_the_file_in_the_way(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(UserError, match=r"--checkpoint: .*file is a file, so .* cannot be a dir"):
        writable_file(blocker / "best.pth", "--checkpoint")
    with pytest.raises(UserError, match="--logs-dir: .*file is a file"):
        writable_dir(blocker / "logs", "--logs-dir")
    with pytest.raises(UserError, match="--checkpoint: .* is a directory"):
        writable_file(tmp_path, "--checkpoint")
    assert writable_dir(tmp_path / "new" / "dir", "--out").is_dir()
    assert [p.name for p in (tmp_path / "new" / "dir").iterdir()] == []  # probe removed


@pytest.mark.parametrize(
    "command, flag",
    [
        ("train", "--checkpoint"),
        ("train", "--logs-dir"),
        ("train", "--runs-dir"),
        ("prepare", "--data-dir"),
        ("evaluate", "--out"),
    ],
)
def test_an_unwritable_output_fails_before_the_work(command, flag, tmp_path, tiny_lake):
    blocker = tmp_path / "in_the_way"
    blocker.write_text("a file")
    target = blocker / "x.pth" if flag == "--checkpoint" else blocker / "sub"
    if command == "train":
        args = [*paths_args(tmp_path, tiny_lake), *SMALL, flag, str(target)]
    elif command == "prepare":
        args = ["--raw-dir", str(tmp_path), flag, str(target)]
    else:
        args = ["--checkpoint", str(make_checkpoint(tmp_path, tiny_lake)), flag, str(target)]
    result = saimp(command, *args, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    [line] = result.stderr.strip().splitlines()
    assert line.startswith(f"error: {flag}: {blocker} is a file"), line
    assert "[EPOCH]" not in result.stdout and "[EVAL]" not in result.stdout


def make_checkpoint(tmp_path: Path, lake: Path) -> Path:
    result = run_train(*paths_args(tmp_path, lake), *SMALL, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    return tmp_path / "data" / "saimp_best.pth"


def saimp(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    from tests.test_train_cli import ENV

    return subprocess.run(
        [sys.executable, "-m", "src.cli", *args], cwd=cwd, env=ENV, capture_output=True,
        text=True, timeout=180,
    )  # fmt: skip


# -- messages that diagnose -------------------------------------------------------------------


def test_raw_candles_given_as_the_lake_are_recognised(tmp_path, tiny_raw_dir):
    result = run_train("--data-dir", str(tiny_raw_dir), cwd=tmp_path)
    assert result.returncode == 2
    assert f"--data-dir {tiny_raw_dir} holds raw candles" in result.stderr
    assert "saimp prepare --raw-dir" in result.stderr and "--data-dir OTHER_DIR" in result.stderr


def test_a_file_given_for_the_raw_directory_is_named(tmp_path, tiny_raw_dir):
    a_file = sorted(tiny_raw_dir.glob("*.parquet"))[0]
    result = saimp("prepare", "--raw-dir", str(a_file), "--data-dir", "lake", cwd=tmp_path)
    assert result.returncode == 2
    assert f"--raw-dir {a_file} is a file; pass the directory" in result.stderr
    assert f"(--raw-dir {tiny_raw_dir})" in result.stderr


def test_evaluate_takes_a_last_state_written_by_a_run(tmp_path, tiny_lake):
    best = make_checkpoint(tmp_path, tiny_lake)
    last = best.with_name("saimp_last.pth")
    result = saimp("evaluate", "--checkpoint", str(last), "--null-draws", "0", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    report = json.loads(Path(result.stdout.strip().splitlines()[-1]).read_text())
    assert report["checkpoint"] == str(last) and report["n_samples"] > 0
    weights = torch.load(last, weights_only=True)["model"]
    assert weights.keys() == load_state_dict_file(best).keys()


# -- the CPU thread budget ------------------------------------------------------------------


def test_the_thread_budget_splits_the_cpus_and_honours_overrides(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr("src.core.threads.available_cpus", lambda: 8)
    assert thread_budget() == (8, "8 CPUs / 1 process(es)")
    assert thread_budget(sharing=3)[0] == 2
    assert thread_budget(sharing=16)[0] == 1
    assert thread_budget(requested=5, sharing=4) == (5, "--threads")
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert thread_budget(sharing=4) == (3, "OMP_NUM_THREADS")


def test_the_governor_leaves_other_processes_their_cores(monkeypatch):
    import src.core.threads as T

    monkeypatch.setattr(T, "available_cpus", lambda: 2)
    # (time s, machine busy CPU-seconds, this process's CPU-seconds), every 2 s.
    samples = iter([(0, 0, 0), (2, 4.0, 2.0), (4, 7.8, 3.8), (6, 11.8, 7.8), (8, 12.0, 8.0)])
    monkeypatch.setattr(T.ThreadGovernor, "_sample", lambda self: next(samples))
    governor = T.ThreadGovernor(budget=2, interval_s=0.0)
    try:
        assert governor.tick() == 1  # a neighbour used one core: keep one thread
        assert torch.get_num_threads() == 1
        assert governor.tick() == 1  # it still does
        assert governor.tick() == 2  # it is gone: both threads again
        assert torch.get_num_threads() == 2
        assert governor.tick() == 2
    finally:
        torch.set_num_threads(1)


def test_an_explicit_thread_count_is_not_governed(monkeypatch):
    from src.core.threads import apply_thread_budget

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    try:
        line, governor = apply_thread_budget(requested=2)
        assert governor is None and line == "2 CPU threads (--threads)"
        monkeypatch.setattr("src.core.threads.available_cpus", lambda: 4)
        line, governor = apply_thread_budget(sharing=2)
        assert governor is not None and governor.budget == 2
        assert line.startswith("2 CPU threads (4 CPUs / 2 process(es)), fewer while")
    finally:
        torch.set_num_threads(1)
