"""Out-of-memory back-off: halve the forward pass, keep the effective batch and gradient."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from src.modelling.train import TrainingError
from src.modelling.training.faults import OOM_ENV
from tests.helpers import make_batches, sgd_train, tiny_model, update_difference


def run(model, batches, tmp_path, result=None):
    return sgd_train(
        model, batches, tmp_path, epochs=2, accumulation_steps=2, result=result
    )  # fmt: skip


def test_injected_oom_on_the_third_window_halves_and_matches(tmp_path, monkeypatch, caplog):
    batches = make_batches([[0, 1, 2, 3], [3, 3, 0, 1], [2, 0, 0, 1]] * 3, seed=21)
    start = tiny_model(21)
    clean = run(copy.deepcopy(start), batches, tmp_path / "clean")
    monkeypatch.setenv(OOM_ENV, "3")
    result = []
    with caplog.at_level("INFO", logger="src"):
        faulty = run(copy.deepcopy(start), batches, tmp_path / "faulty", result)
    state = result[0].state
    out = caplog.text
    assert "[OOM] epoch 1, batch 4: out of memory with 4 samples per forward pass" in out
    assert state.micro_batch == 2
    assert update_difference(faulty, clean, start) < 1e-4
    assert state.optimizer_steps == 2 * 5  # no window lost


def test_oom_at_one_sample_gives_up_with_a_clear_message(tmp_path, monkeypatch):
    class AlwaysOOM(nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = tiny_model(0)

        def forward(self, x):
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")

    batches = make_batches([[0, 1]] * 2, seed=22)
    with pytest.raises(TrainingError, match="even with a micro-batch of 1 sample"):
        run(AlwaysOOM(), batches, tmp_path)
