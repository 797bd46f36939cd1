"""Samples per forward pass are free: auto, pinned and the loader's own cut agree."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from src.modelling.reporting import NullLogger
from src.modelling.train import LoopState, train
from tests.helpers import WEIGHTS, make_batches, tiny_model, update_difference


class Batches(list):
    """A list of batches that, like the streaming dataset, knows its batch size."""

    batch_size = 3


def run(model, batches, tmp_path, micro_batch, state=None):
    opt = torch.optim.SGD(model.parameters(), lr=0.3)
    train(
        model,
        nn.CrossEntropyLoss(weight=WEIGHTS),
        opt,
        None,
        batches,
        batches[:2],
        1,
        accumulation_steps=5,
        precision="fp32",
        device="cpu",
        micro_batch=micro_batch,
        checkpoint_path=tmp_path / "best.pth",
        logger=NullLogger(),
        state=state,
    )
    return model


@pytest.mark.parametrize("micro_batch", ["auto", 1, 2, 7, 15])
def test_auto_and_pinned_micro_batches_give_the_same_parameters(micro_batch, tmp_path):
    # The seed's 3 x 5: 12 batches of 3 = two full windows and a short one (2 batches).
    labels = [[0, 0, 0], [3, 3, 3], [1, 0, 2], [0, 0, 1], [2, 3, 0], [0, 0, 0]] * 2
    batches = Batches(make_batches(labels, seed=31))
    start = tiny_model(31)
    pinned = run(copy.deepcopy(start), batches, tmp_path, None)  # the loader's batches of 3
    state = LoopState()
    other = run(copy.deepcopy(start), batches, tmp_path, micro_batch, state)
    assert state.micro_batch == (15 if micro_batch == "auto" else micro_batch)
    assert update_difference(other, pinned, start) < 1e-5
