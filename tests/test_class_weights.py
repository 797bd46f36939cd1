"""Class weights that can fit the label mix, and label mixes that make no score.

"balanced" weights are computed exactly and are what the loss, the sidecar and
`saimp evaluate` use; the run header shows the training mix beside the weights and
warns when the weights hand one class most of the loss; a single-class training split
is refused, an absent class and a single-class validation split are warned about.
"""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import torch

from src.config import Config, TrainConfig
from src.core.errors import UserError, run_cli
from src.modelling.checkpointing.sidecar import sidecar_class_weights
from src.modelling.evaluate import main as evaluate_main
from src.modelling.observability.header import weight_lines
from src.modelling.training import components
from src.modelling.training.class_mix import (
    class_shares,
    single_class_training,
    start_warnings,
    weights_misfit,
)
from src.modelling.training.class_weights import balanced_weights, resolve_class_weights
from src.modelling.training.distributed import World
from src.modelling.training.run import run_training
from tests.test_label_truth import rewrite_lake, tiny_config, train_tiny

DEFAULT = (1.0, 10.0, 10.0, 20.0)


# -- pure ------------------------------------------------------------------------------------


def test_balanced_weights_are_inverse_frequency_with_mean_one():
    counts = [600, 200, 150, 50]  # N = 1000, K = 4: w_c = 1000 / (4 n_c)
    assert balanced_weights(counts) == pytest.approx((5 / 12, 1.25, 5 / 3, 5.0), abs=1e-12)
    w = np.array(balanced_weights(counts))
    assert (w * counts).sum() / sum(counts) == pytest.approx(1.0)  # mean weight per window
    assert np.allclose(w * counts, 250.0)  # every class carries the same loss mass
    # An absent class gets 0 and K counts the present classes only: 1000 / (2 n_c).
    assert balanced_weights([700, 300, 0, 0]) == pytest.approx((5 / 7, 5 / 3, 0.0, 0.0))
    assert resolve_class_weights("balanced", counts) == balanced_weights(counts)
    assert resolve_class_weights(DEFAULT, counts) == DEFAULT
    with pytest.raises(ValueError, match="at least one training window"):
        balanced_weights([0, 0, 0, 0])


def test_the_loss_takes_the_resolved_weights_and_refuses_the_word():
    cfg = Config(train=TrainConfig(class_weights="balanced"))
    loss = components.build_loss(cfg, balanced_weights([600, 200, 150, 50]))
    assert loss.weight.tolist() == pytest.approx([5 / 12, 1.25, 5 / 3, 5.0])
    with pytest.raises(ValueError, match="resolved from the training split"):
        components.build_loss(cfg)


def test_the_default_weights_fit_a_neutro_heavy_mix_and_not_a_stop_heavy_one():
    calm = [800, 70, 70, 60]  # 80/7/7/6: loss shares about 24/21/21/35 %
    shares = [round(100 * s.loss_share) for s in class_shares(calm, DEFAULT)]
    assert shares == [24, 21, 21, 35]
    assert weights_misfit(calm, DEFAULT) is None
    walk = [300, 420, 200, 80]  # a random walk's mix: Stop gets ~52 %, Neutro ~4 %
    warning = weights_misfit(walk, DEFAULT)
    assert warning is not None
    assert "Stop carries 52% of the weighted loss and Neutro 4%" in warning
    assert "Neutro 30%, Stop 42%, Long 20%, SuperLong 8% of windows" in warning
    assert warning.endswith("try --class-weights balanced")
    assert weights_misfit(walk, balanced_weights(walk)) is None  # balanced always fits


def test_the_header_shows_the_mix_beside_the_weights():
    lines = weight_lines("balanced", balanced_weights([600, 200, 150, 50]), [600, 200, 150, 50])
    assert lines[0] == "[WEIGHTS] train.class_weights balanced, beside the training mix:"
    assert lines[4] == (
        "[WEIGHTS]   SuperLong   5.0% of windows | weight   5.000 |  25.0% of the weighted loss"
    )


def test_single_class_and_absent_classes():
    refusal = single_class_training([0, 500, 0, 0], "--data-dir L")
    assert refusal.startswith("--data-dir L: the training split holds only Stop windows (500)")
    assert "saimp prepare --barriers volatility" in refusal
    assert single_class_training([10, 500, 0, 0], "L") is None
    [absent] = start_warnings([900, 60, 40, 0], DEFAULT, [90, 8, 2, 1])
    assert absent.startswith("the training split has no SuperLong windows")
    [val] = start_warnings([800, 70, 70, 60], DEFAULT, [0, 0, 40, 0])
    assert val.startswith("the validation split holds only Long windows: its macro-F1 and ")
    assert start_warnings([800, 70, 70, 60], DEFAULT, [80, 7, 7, 6]) == []


# -- in a run ----------------------------------------------------------------------------


def test_balanced_weights_are_what_the_loss_the_sidecar_and_evaluate_use(
    tmp_path, tiny_lake, capsys
):
    sidecar = train_tiny(tmp_path, tiny_lake, class_weights="balanced")
    train_counts = sidecar["label_counts"]["train"]
    assert sidecar["class_weights"] == pytest.approx(balanced_weights(train_counts), abs=1e-12)
    assert sidecar["config"]["train"]["class_weights"] == "balanced"
    assert sidecar_class_weights(sidecar) == sidecar["class_weights"]
    # evaluate's loss on the validation split with the recorded weights is the run's
    # val_loss: the training loss used the same numbers.
    best = tmp_path / "data" / "best.pth"
    argv = ["--checkpoint", str(best), "--split", "val", "--null-draws", "0"]
    assert run_cli(evaluate_main, argv) == 0
    report = json.loads((tmp_path / "data" / "best_val_report.json").read_text())
    assert report["loss_class_weights"] == sidecar["class_weights"]
    assert report["loss"] == pytest.approx(sidecar["metrics"]["val_loss"], rel=1e-5)


def test_a_single_class_training_split_is_refused(tmp_path, tiny_lake):
    lake = rewrite_lake(tiny_lake, tmp_path / "lake", labels=np.zeros_like)
    cfg = tiny_config(tmp_path, lake)
    with pytest.raises(UserError) as err:
        run_training(cfg, World(), torch.device("cpu"))
    assert str(err.value).startswith(
        f"--data-dir {lake}: the training split holds only Neutro windows"
    )
    assert not (tmp_path / "data" / "best.pth").exists()


def test_an_absent_class_is_warned_about_once(tmp_path, tiny_lake, caplog):
    no_superlong = rewrite_lake(tiny_lake, tmp_path / "lake", labels=lambda y: np.minimum(y, 2))
    caplog.set_level(logging.INFO, logger="src")
    sidecar = train_tiny(tmp_path, no_superlong, class_weights="balanced")
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    [absent] = [w for w in warnings if "no SuperLong windows" in w]
    assert absent.startswith("the training split has no SuperLong windows")
    assert sidecar["class_weights"][3] == 0.0  # never a target: weight 0
    assert not any("do not fit" in w for w in warnings)
