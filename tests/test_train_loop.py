"""The loop's decisions: best checkpoint only on improvement, scheduler, early stopping."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from src.modelling.checkpointing.best import load_state_dict_file
from src.modelling.observability.hooks import Hooks
from src.modelling.training.loop import Loop
from tests.helpers import WEIGHTS, fit, make_batches, tiny_model


class Recorder(Hooks):
    def __init__(self):
        self.saved, self.ended = [], []

    def checkpoint_saved(self, path, record=None):
        self.saved.append((record["epoch"], path.read_bytes()))

    def epoch_end(self, record):
        self.ended.append(record["epoch"])


def scripted_validation(monkeypatch, losses, f1s=None):
    """Make validation report `losses[epoch - 1]` (and macro-F1s) instead of measuring."""
    calls = iter(range(len(losses)))

    def fake_evaluate(self, val_dl):
        i = next(calls)
        return {
            "val_loss": losses[i],
            "val_acc": 0.5,
            "val_macro_f1": (f1s or [0.0] * len(losses))[i],
            "val_balanced_acc": 0.25,
            "val_recall": {"Neutro": 1.0, "Stop": 0.0, "Long": 0.0, "SuperLong": 0.0},
            "val_confusion": [[1, 0, 0, 0]] + [[0, 0, 0, 0]] * 3,
        }

    monkeypatch.setattr(Loop, "evaluate", fake_evaluate)


def run(tmp_path, epochs, **kw):
    model = tiny_model(1)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, factor=0.5, patience=0)
    hooks = Recorder()
    batches = make_batches([[0, 1, 2, 3]] * 4, seed=2)
    result = fit(model, nn.CrossEntropyLoss(weight=WEIGHTS), opt, sched, batches, batches, epochs,
                 checkpoint=tmp_path / "best.pth", hooks=hooks, **kw)  # fmt: skip
    return result.best_checkpoint, hooks, result.state, model


def test_checkpoint_only_on_improvement_and_early_stopping(tmp_path, monkeypatch):
    scripted_validation(monkeypatch, [1.0, 0.8, 0.9, 0.85, 0.95, 0.7, 0.6])
    path, logger, state, model = run(tmp_path, 7, early_stopping_patience=3)
    assert [epoch for epoch, _ in logger.saved] == [1, 2]  # 0.9, 0.85, 0.95 are not better
    assert logger.ended == [1, 2, 3, 4, 5]  # three epochs without improvement: stop
    assert state.stopped_early and state.best_epoch == 2 and state.best_metric == 0.8
    sidecar = json.loads(path.with_suffix(".json").read_text())
    assert sidecar["epoch"] == 2 and sidecar["metrics"]["val_loss"] == 0.8
    assert path.read_bytes() == logger.saved[-1][1]  # the file on disk is epoch 2's
    # ReduceLROnPlateau (patience 0) halved the LR after each epoch without improvement.
    assert [r["lr"] for r in state.history] == pytest.approx([1e-2, 1e-2, 1e-2, 5e-3, 2.5e-3])


def test_macro_f1_can_select_the_checkpoint(tmp_path, monkeypatch):
    scripted_validation(monkeypatch, [1.0, 0.8, 0.7], f1s=[0.3, 0.2, 0.35])
    _, logger, state, _ = run(tmp_path, 3, select_metric="val_macro_f1")
    assert [epoch for epoch, _ in logger.saved] == [1, 3]
    assert state.best_metric == 0.35


def test_the_best_checkpoint_loads_into_a_plain_model(tmp_path):
    path, _, _, model = run(tmp_path, 1)
    fresh = tiny_model(99)
    fresh.load_state_dict(load_state_dict_file(path))
    for a, b in zip(fresh.parameters(), model.parameters(), strict=True):
        assert torch.equal(a, b)
