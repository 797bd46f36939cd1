"""Two gloo ranks on CPU train exactly like one process with the global batch."""

from __future__ import annotations

import json
import socket
import subprocess
import sys

import pytest
import torch
import torch.multiprocessing as mp

from src.data.lake import scan_lake_for
from src.data.normalize import fit_normalizer
from src.modelling.checkpointing.best import load_state_dict_file
from src.modelling.training.cli import build_parser, config_from_args
from tests.ddp_workers import run_training
from tests.helpers import make_batches, tiny_model
from tests.test_train_cli import ENV, SMALL, paths_args

pytestmark = pytest.mark.ddp
TIMEOUT_S = 120  # a hang fails the test instead of blocking CI


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(world_size, train_batches, val_batches, kwargs, out_dir):
    """Run `run_training` on `world_size` processes; fail (and kill them) after TIMEOUT_S."""
    ctx = mp.start_processes(
        run_training,
        args=(world_size, free_port(), train_batches, val_batches, dict(kwargs), str(out_dir)),
        nprocs=world_size,
        join=False,
        start_method="spawn",
    )
    try:
        deadline = TIMEOUT_S
        while not ctx.join(timeout=1):
            deadline -= 1
            if deadline <= 0:
                pytest.fail(f"DDP run did not finish in {TIMEOUT_S}s (hang)")
    finally:
        for p in ctx.processes:
            if p.is_alive():
                p.kill()
    return [torch.load(out_dir / f"rank{r}.pt") for r in range(world_size)]


def split_for_ranks(batches, world_size):
    """Rank r gets the r-th slice of every global batch (what a sharded loader gives)."""
    out = [[] for _ in range(world_size)]
    for x, y in batches:
        for r, (xs, ys) in enumerate(zip(x.chunk(world_size), y.chunk(world_size), strict=True)):
            out[r].append((xs, ys))
    return out


def assert_params_close(a, b, tol=1e-5):
    va = torch.cat([p.flatten() for p in a])
    vb = torch.cat([p.flatten() for p in b])
    assert float((va - vb).abs().max()) < tol


@pytest.mark.parametrize("accumulation_steps", [1, 3])
def test_two_ranks_equal_one_process_with_the_global_batch(accumulation_steps, tmp_path):
    # Global micro-batches of 6 = 3 per rank; 7 of them, so the last window is short.
    labels = [[0, 0, 3, 1, 2, 0], [3, 3, 0, 0, 0, 1], [2, 2, 1, 0, 3, 0]] * 2 + [[1, 0, 0, 3]]
    batches = make_batches(labels, seed=11)
    val = make_batches([[0, 1, 2, 3, 0, 0], [3, 2, 0, 0, 1, 0]], seed=12)
    kwargs = {"accumulation_steps": accumulation_steps, "epochs": 2}
    (tmp_path / "one").mkdir()
    (tmp_path / "two").mkdir()
    [single] = launch(1, [batches], [val], kwargs, tmp_path / "one")
    ranks = launch(
        2, split_for_ranks(batches, 2), split_for_ranks(val, 2), kwargs, tmp_path / "two"
    )

    assert_params_close(ranks[0]["params"], single["params"])
    assert_params_close(ranks[1]["params"], ranks[0]["params"], tol=1e-7)
    assert ranks[0]["val_loss"] == pytest.approx(single["val_loss"], rel=1e-5)
    # One gradient all-reduce per window (one bucket for this model), not per micro-batch.
    assert ranks[0]["allreduce_calls"] == ranks[0]["windows"] == single["windows"]
    # Only rank 0 wrote the checkpoint, with plain (not `module.`) keys.
    state = load_state_dict_file(tmp_path / "two" / "best.pth")
    assert not any(k.startswith("module.") for k in state)
    tiny_model(0).load_state_dict(state)


def test_uneven_data_per_rank_finishes_with_equal_steps(tmp_path):
    rank0 = make_batches([[0, 1, 2]] * 5, seed=13)
    rank1 = make_batches([[3, 0, 1]] * 3, seed=14)
    val = [make_batches([[0, 1]] * 3, seed=15), make_batches([[2, 3]], seed=16)]
    ranks = launch(2, [rank0, rank1], val, {"accumulation_steps": 2, "epochs": 2}, tmp_path)
    # Windows of 2: rank 1 has data for two windows, so both ranks step twice per epoch.
    assert ranks[0]["optimizer_steps"] == ranks[1]["optimizer_steps"] == 2 * 2
    assert_params_close(ranks[0]["params"], ranks[1]["params"], tol=1e-7)


def test_schedule_best_and_stopping_epochs_agree_across_ranks(tmp_path):
    labels = [[0, 0, 3, 1, 2, 0], [3, 3, 0, 0, 0, 1]] * 2
    batches = make_batches(labels, seed=17)
    val = make_batches([[0, 1, 2, 3, 0, 3]], seed=18)
    # A learning rate this large makes validation loss bounce, so the plateau scheduler
    # cuts the LR and early stopping ends the run before the last epoch.
    kwargs = {"epochs": 8, "lr": 1.0, "early_stopping_patience": 2}
    (tmp_path / "one").mkdir()
    (tmp_path / "two").mkdir()
    [single] = launch(1, [batches], [val], kwargs, tmp_path / "one")
    ranks = launch(
        2, split_for_ranks(batches, 2), split_for_ranks(val, 2), kwargs, tmp_path / "two"
    )
    assert single["epochs_run"] < 8, "the scenario must stop early to test anything"
    assert len(set(single["lr"])) > 1, "the scenario must cut the learning rate"
    for r in ranks:
        assert r["lr"] == single["lr"]
        assert r["best_epoch"] == single["best_epoch"]
        assert r["epochs_run"] == single["epochs_run"]


@pytest.mark.slow
def test_torchrun_runs_the_module_with_the_same_flags(tmp_path, tiny_lake):
    """`torchrun -m src.modelling.train` on 2 CPU processes: gloo, rank 0 alone writes."""
    result = subprocess.run(
        [
            sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
            "-m", "src.modelling.train", *paths_args(tmp_path, tiny_lake), *SMALL,
            "--epochs", "1",
        ],
        cwd=tmp_path,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    best = tmp_path / "data" / "saimp_best.pth"
    assert result.stdout.splitlines().count(str(best)) == 1  # printed by rank 0 only
    assert "2 process(es)" in result.stdout
    assert len(list((tmp_path / "logs").glob("train_run_*.txt"))) == 1
    assert not any(k.startswith("module.") for k in load_state_dict_file(best))
    # Each rank fitted the normaliser on half the training units: the same statistics,
    # to the bit, as one process fitting all of them.
    args = build_parser().parse_args([*paths_args(tmp_path, tiny_lake), *SMALL])
    alone = fit_normalizer(scan_lake_for(config_from_args(args).data, tiny_lake))
    sidecar = json.loads(best.with_suffix(".json").read_text())
    assert sidecar["normalizer"] == alone.to_dict()
