"""Accumulated windows give the gradient of one batch holding the same samples."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn

from src.modelling.training.exact_loss import UnsupportedLossError, WindowLoss
from tests.helpers import (
    WEIGHTS,
    fit,
    make_batches,
    relative_difference,
    sgd_train,
    tiny_model,
    update_difference,
)


def train_accumulated(model, batches, accumulation_steps, tmp_path, loss=None):
    return sgd_train(
        model, batches, tmp_path, lr=0.5, loss=loss, accumulation_steps=accumulation_steps
    )


def train_whole_windows(model, batches, accumulation_steps, loss=None):
    """Reference: one plain SGD step per window, on the window as a single batch."""
    loss = loss or nn.CrossEntropyLoss(weight=WEIGHTS)
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    model.train()
    for start in range(0, len(batches), accumulation_steps):
        window = batches[start : start + accumulation_steps]
        x = torch.cat([b[0] for b in window])
        y = torch.cat([b[1] for b in window])
        opt.zero_grad()
        loss(model(x), y).backward()
        opt.step()
    return model


@pytest.mark.parametrize("accumulation_steps", [1, 2, 3, 4, 5])
def test_accumulated_equals_one_batch_per_window(accumulation_steps, tmp_path):
    rng = np.random.default_rng(accumulation_steps)
    for trial in range(3):
        n_batches = int(rng.integers(1, 3 * accumulation_steps + 2))  # short last window too
        sizes = rng.integers(1, 5, size=n_batches)  # micro-batches of 1..4
        sizes[-1] = max(1, sizes[-1] - 1)  # a shorter final micro-batch
        mix = rng.dirichlet(np.ones(4))  # a random class mix per trial
        labels = [rng.choice(4, size=int(s), p=mix).tolist() for s in sizes]
        batches = make_batches(labels, seed=trial)
        start = tiny_model(trial)
        ours = train_accumulated(copy.deepcopy(start), batches, accumulation_steps, tmp_path)
        ref = train_whole_windows(copy.deepcopy(start), batches, accumulation_steps)
        assert relative_difference(ours, ref) < 1e-6
        assert update_difference(ours, ref, start) < 1e-4


def test_three_neutro_three_superlong_case(tmp_path):
    """The issue's example: the seed's loss / K weighs these two micro-batches equally."""
    batches = make_batches([[0, 0, 0], [3, 3, 3]], seed=1)
    start = tiny_model(1)
    ours = train_accumulated(copy.deepcopy(start), batches, 2, tmp_path)
    ref = train_whole_windows(copy.deepcopy(start), batches, 2)
    assert update_difference(ours, ref, start) < 1e-4

    # The seed's recipe (mean loss / K per micro-batch) is measurably different: the test
    # above would catch it.
    naive = copy.deepcopy(start)
    opt = torch.optim.SGD(naive.parameters(), lr=0.5)
    loss = nn.CrossEntropyLoss(weight=WEIGHTS)
    for x, y in batches:
        (loss(naive(x), y) / 2).backward()
    opt.step()
    assert update_difference(naive, ref, start) > 0.05


@pytest.mark.parametrize(
    "loss",
    [
        nn.CrossEntropyLoss(),
        nn.CrossEntropyLoss(weight=WEIGHTS, label_smoothing=0.1),
        nn.CrossEntropyLoss(weight=WEIGHTS, ignore_index=1),
        nn.CrossEntropyLoss(weight=WEIGHTS, reduction="sum"),
    ],
    ids=["unweighted", "label-smoothing", "ignore-index", "sum"],
)
def test_other_weighted_mean_losses_are_exact(loss, tmp_path):
    batches = make_batches([[0, 1, 2], [3], [0, 0], [1, 3, 3, 2], [2]], seed=3)
    start = tiny_model(3)
    ours = train_accumulated(copy.deepcopy(start), batches, 3, tmp_path, loss=loss)
    ref = train_whole_windows(copy.deepcopy(start), batches, 3, loss=loss)
    assert update_difference(ours, ref, start) < 1e-4


def test_logged_losses_are_true_weighted_means(tmp_path):
    batches = make_batches([[0, 0, 0], [3, 3, 3], [1, 2]], seed=4)
    model = tiny_model(4)
    loss = nn.CrossEntropyLoss(weight=WEIGHTS)
    # lr 0: parameters stay put, so the logged train loss must equal the one-batch loss.
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    state = fit(
        model, loss, opt, None, batches, batches, 1, accumulation_steps=2,
        checkpoint=tmp_path / "b.pth",
    ).state  # fmt: skip
    x = torch.cat([b[0] for b in batches])
    y = torch.cat([b[1] for b in batches])
    with torch.no_grad():  # dropout is 0, so train and eval mode give the same loss
        expected = float(loss(model(x), y))
    record = state.history[0]
    assert record["train_loss"] == pytest.approx(expected, rel=1e-5)
    assert record["val_loss"] == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize(
    "loss", [nn.CrossEntropyLoss(reduction="none"), nn.MSELoss(), lambda a, b: a.sum()]
)
def test_unsupported_losses_are_rejected(loss):
    with pytest.raises(UnsupportedLossError, match="exact"):
        WindowLoss(loss)
