"""Samples per forward pass: auto, pinned and the loader's own cut run the windows in the
passes they promise and, without dropout, give the same parameters."""

from __future__ import annotations

import copy
import math

import pytest
from torch import nn

from tests.helpers import make_batches, sgd_train, tiny_model, update_difference


class Batches(list):
    """A list of batches that, like the streaming dataset, knows its batch size."""

    batch_size = 3


@pytest.mark.parametrize("micro_batch", ["auto", 1, 2, 7, 15])
def test_auto_and_pinned_micro_batches_give_the_same_parameters(micro_batch, tmp_path):
    # The seed's 3 x 5: 12 batches of 3 = two full windows and a short one (2 batches).
    labels = [[0, 0, 0], [3, 3, 3], [1, 0, 2], [0, 0, 1], [2, 3, 0], [0, 0, 0]] * 2
    batches = Batches(make_batches(labels, seed=31))
    start = tiny_model(31)  # dropout 0: the cut cannot change the gradient
    # Loader batches of 3, five per window: as they come, or re-cut.
    pinned = sgd_train(copy.deepcopy(start), batches, tmp_path, accumulation_steps=5)
    result = []
    counted = PassCounter(copy.deepcopy(start))
    sgd_train(
        counted, batches, tmp_path, accumulation_steps=5, micro_batch=micro_batch,
        result=result,
    )  # fmt: skip
    state = result[0].state
    size = 15 if micro_batch == "auto" else micro_batch
    assert state.micro_batch == size
    # Windows of 15, 15 and 6 samples, each cut into passes of `size` samples.
    assert counted.train_passes == [math.ceil(n / size) for n in (15, 15, 6)]
    assert update_difference(counted.inner, pinned, start) < 1e-5


def test_the_loader_cut_runs_one_pass_per_batch(tmp_path):
    batches = Batches(make_batches([[0, 1, 2]] * 7, seed=32))
    counted = PassCounter(tiny_model(32))
    sgd_train(counted, batches, tmp_path, accumulation_steps=3, micro_batch="loader")
    assert counted.train_passes == [3, 3, 1]


class PassCounter(nn.Module):
    """Wraps a model; counts its training forward passes per optimizer step (window)."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self.train_passes: list[int] = []

    def forward(self, x):
        if self.training:
            first_of_window = all(p.grad is None for p in self.inner.parameters())
            if first_of_window:
                self.train_passes.append(0)
            self.train_passes[-1] += 1
        return self.inner(x)
