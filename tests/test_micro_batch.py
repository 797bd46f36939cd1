"""Samples per forward pass are free: auto, pinned and the loader's own cut agree."""

from __future__ import annotations

import copy

import pytest

from src.modelling.train import LoopState
from tests.helpers import make_batches, sgd_train, tiny_model, update_difference


class Batches(list):
    """A list of batches that, like the streaming dataset, knows its batch size."""

    batch_size = 3


@pytest.mark.parametrize("micro_batch", ["auto", 1, 2, 7, 15])
def test_auto_and_pinned_micro_batches_give_the_same_parameters(micro_batch, tmp_path):
    # The seed's 3 x 5: 12 batches of 3 = two full windows and a short one (2 batches).
    labels = [[0, 0, 0], [3, 3, 3], [1, 0, 2], [0, 0, 1], [2, 3, 0], [0, 0, 0]] * 2
    batches = Batches(make_batches(labels, seed=31))
    start = tiny_model(31)
    # Loader batches of 3, five per window: as they come, or re-cut.
    pinned = sgd_train(copy.deepcopy(start), batches, tmp_path, accumulation_steps=5)
    state = LoopState()
    other = sgd_train(
        copy.deepcopy(start), batches, tmp_path, accumulation_steps=5, micro_batch=micro_batch,
        state=state,
    )  # fmt: skip
    assert state.micro_batch == (15 if micro_batch == "auto" else micro_batch)
    assert update_difference(other, pinned, start) < 1e-5
