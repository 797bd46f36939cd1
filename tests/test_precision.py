"""Mixed precision on CPU, and what happens to non-finite losses and gradients."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from src.modelling.train import TrainingError
from src.modelling.training.precision import make_precision, resolve_precision
from tests.helpers import (
    WEIGHTS,
    fit,
    make_batches,
    relative_difference,
    tiny_model,
    update_difference,
)


def run(model, batches, precision, tmp_path, *, sgd=False, val=None, **kw):
    """One epoch through `fit()`; returns the `TrainResult`."""
    opt = (torch.optim.SGD if sgd else torch.optim.AdamW)(model.parameters(), lr=0.05)
    return fit(
        model,
        nn.CrossEntropyLoss(weight=WEIGHTS),
        opt,
        None,
        batches,
        val or batches[:2],
        1,
        precision=precision,
        checkpoint=tmp_path / "best.pth",
        **kw,
    )


def test_auto_is_fp32_on_cpu_and_bad_names_are_rejected():
    assert resolve_precision("auto", torch.device("cpu")) == "fp32"
    with pytest.raises(ValueError, match="precision"):
        resolve_precision("fp8", torch.device("cpu"))


def test_scaler_is_active_only_for_fp16():
    cpu = torch.device("cpu")
    assert make_precision("fp16", cpu).make_scaler().is_enabled()
    assert not make_precision("bf16", cpu).make_scaler().is_enabled()
    assert not make_precision("fp32", cpu).make_scaler().is_enabled()


@pytest.mark.parametrize("precision, tolerance", [("bf16", 0.05), ("fp16", 0.01)])
def test_low_precision_stays_close_to_fp32(precision, tolerance, tmp_path):
    """Six SGD steps of a small model: the low-precision update is within `tolerance` of
    the fp32 update, relative to its size (bf16 keeps 8 mantissa bits, fp16 11)."""
    batches = make_batches([[0, 1, 2, 3]] * 6, seed=5)
    start = tiny_model(5)
    ref = copy.deepcopy(start)
    run(ref, batches, "fp32", tmp_path, sgd=True)
    low = copy.deepcopy(start)
    run(low, batches, precision, tmp_path, sgd=True)
    assert update_difference(low, ref, start) < tolerance
    assert relative_difference(low, start) > 1e-3  # it did train


def test_fp16_scaler_skips_a_step_with_inf_gradients(tmp_path):
    class InfGradOnce(nn.Module):
        """Wraps a model; the gradient of its second forward pass is +inf."""

        def __init__(self, inner):
            super().__init__()
            self.inner, self.calls = inner, 0

        def forward(self, x):
            self.calls += 1
            out = self.inner(x)
            if self.calls == 2 and self.training:
                out.register_hook(lambda g: torch.full_like(g, float("inf")))
            return out

    batches = make_batches([[0, 1, 2, 3]] * 3, seed=6)
    model = InfGradOnce(tiny_model(6))
    state = run(model, batches, "fp16", tmp_path).state
    assert state.skipped_steps == 1
    assert state.optimizer_steps == 2
    assert state.history[0]["skipped_steps"] == 1


def test_nan_in_data_skips_that_step_only(tmp_path, caplog):
    batches = make_batches([[0, 1, 2, 3]] * 4, seed=7)
    batches[1][0][0, 0, 0] = float("nan")
    with caplog.at_level("INFO", logger="src"):
        state = run(tiny_model(7), batches, "fp32", tmp_path, val=batches[2:]).state
    assert state.nonfinite_windows == 1
    assert state.optimizer_steps == 3
    assert "batch 1: non-finite loss, step skipped" in caplog.text


def test_persistent_nan_stops_the_run_and_keeps_the_checkpoint(tmp_path):
    clean = make_batches([[0, 1, 2, 3]] * 3, seed=8)
    model = tiny_model(8)
    best = run(model, clean, "fp32", tmp_path).best_checkpoint
    before = best.read_bytes()
    poisoned = make_batches([[0, 1, 2, 3]] * 6, seed=9)
    for x, _ in poisoned[2:]:
        x[:] = float("nan")
    with pytest.raises(TrainingError, match="3 consecutive windows had a non-finite loss"):
        run(model, poisoned, "fp32", tmp_path, max_nonfinite_windows=3)
    assert best.read_bytes() == before


@pytest.mark.parametrize(
    "precision, dtype",
    [("bf16", torch.bfloat16), ("fp16", torch.float16), ("fp32", None), ("auto", None)],
)
def test_the_forward_pass_runs_under_the_requested_autocast(precision, dtype, tmp_path):
    """What the model sees inside `train()`: autocast on with that dtype, or off (fp32;
    auto is fp32 on a CPU). The matmul output's dtype shows autocast really applied."""

    class Probe(nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner, self.seen = inner, set()

        def forward(self, x):
            enabled = torch.is_autocast_enabled("cpu")
            used = torch.get_autocast_dtype("cpu") if enabled else None
            matmul = (x.flatten(1) @ x.flatten(1).T).dtype
            self.seen.add((self.training, used, matmul))
            return self.inner(x)

    probe = Probe(tiny_model(10))
    run(probe, make_batches([[0, 1, 2, 3]] * 2, seed=10), precision, tmp_path)
    expected_matmul = dtype or torch.float32
    assert probe.seen == {(True, dtype, expected_matmul), (False, dtype, expected_matmul)}
