"""Calibrated probabilities and the decision rule: the math on synthetic logits whose
right answer is known, the sidecar written atomically, `saimp calibrate` end to end, the
end of `saimp train`, and what `saimp evaluate` reports from them."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch

from src.config import Config, DataConfig, ModelConfig, PathsConfig, TrainConfig
from src.core.errors import run_cli
from src.data.dataloader import build_data
from src.data.prepare import prepare_lake
from src.data.synthetic import write_raw
from src.modelling import calibrate as calibrate_cli
from src.modelling.checkpointing import atomic
from src.modelling.checkpointing.best import save_best, sidecar_path
from src.modelling.checkpointing.sidecar import sidecar_for
from src.modelling.evaluate import main as evaluate_main
from src.modelling.evaluation import metrics
from src.modelling.prediction import calibration as cal
from src.modelling.prediction import decision as dec
from src.modelling.prediction import fit_calibration as fc
from src.modelling.training import components
from src.modelling.training.distributed import World
from src.modelling.training.run import run_training
from tests.test_evaluate import SEQ_LEN, direct_predictions
from tests.test_label_truth import tiny_config

W = np.array([1.0, 10.0, 10.0, 20.0])
PRIOR = np.array([0.78, 0.11, 0.07, 0.04])


def true_logits(n: int, seed: int, spread: float = 1.5) -> tuple[np.ndarray, np.ndarray]:
    """Logits z (n, 4) of the true p(c|x) around an imbalanced prior, and labels drawn
    from softmax(z): a model of these logits is calibrated by construction."""
    rng = np.random.default_rng(seed)
    z = np.log(PRIOR) + spread * rng.standard_normal((n, 4))
    p = cal.softmax(z)
    y = (rng.random(n)[:, None] > np.cumsum(p, axis=1)).sum(axis=1)
    return z, np.minimum(y, 3)


def macro_f1(y: np.ndarray, pred: np.ndarray) -> float:
    return metrics.macro_f1(metrics.confusion_matrix(y, pred, 4))


# ---------------------------------------------------------------------------- ECE


def guo_ece(probs: np.ndarray, y: np.ndarray, n_bins: int = 15) -> float:
    """Guo et al.'s reference loop: bins (lower, upper] of torch.linspace(0, 1, n + 1)."""
    conf, pred = probs.max(axis=1), probs.argmax(axis=1)
    edges = np.linspace(0, 1, n_bins + 1)
    ece = 0.0
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        inside = (conf > lo) & (conf <= hi)
        if inside.any():
            ece += inside.mean() * abs((pred[inside] == y[inside]).mean() - conf[inside].mean())
    return ece


def test_ece_on_hand_computed_examples() -> None:
    probs = np.array(
        [
            [0.90, 0.05, 0.03, 0.02],  # conf 0.9 (bin 14: (13/15, 14/15]), right
            [0.05, 0.90, 0.03, 0.02],  # conf 0.9, wrong (true class 0)
            [0.55, 0.45, 0.00, 0.00],  # conf 0.55 (bin 9), right
            [0.30, 0.30, 0.20, 0.20],  # conf 0.3 (bin 5), predicts class 0, wrong
        ]
    )
    y = np.array([0, 0, 0, 2])
    # (2/4) |1/2 - 0.9| + (1/4) |1 - 0.55| + (1/4) |0 - 0.3|
    assert cal.expected_calibration_error(probs, y) == pytest.approx(0.2 + 0.1125 + 0.075)
    bins = cal.reliability_bins(probs, y)
    assert bins["count"][13] == 2 and bins["count"][8] == 1 and bins["count"][4] == 1
    assert bins["accuracy"][13] == 0.5 and bins["confidence"][13] == pytest.approx(0.9)
    assert bins["accuracy"][0] is None  # an empty bin, JSON-ready

    # Seven of ten windows right at confidence 0.7: perfectly calibrated.
    probs = np.tile([0.7, 0.1, 0.1, 0.1], (10, 1))
    assert cal.expected_calibration_error(probs, np.array([0] * 7 + [1] * 3)) == pytest.approx(0)
    # A confidence on a bin edge (6/15 = 0.4) belongs to the bin below it.
    edge = np.linspace(0, 1, 16)[6]
    probs = np.array([[edge, 1 - edge - 0.2, 0.1, 0.1]])
    assert cal.reliability_bins(probs, np.array([0]))["count"][5] == 1
    # Equals the reference loop on random forecasts.
    z, y = true_logits(5000, seed=4)
    probs = cal.softmax(3 * z)
    assert cal.expected_calibration_error(probs, y) == pytest.approx(guo_ece(probs, y), abs=1e-12)


def test_log_loss_counts_each_window_once_and_floors_zero() -> None:
    probs = np.array([[0.5, 0.5, 0.0, 0.0], [0.25, 0.25, 0.25, 0.25]])
    assert cal.log_loss(probs, np.array([0, 3])) == pytest.approx((np.log(2) + np.log(4)) / 2)
    assert cal.log_loss(probs, np.array([2, 3])) == pytest.approx((34.538776 + np.log(4)) / 2)


# ---------------------------------------------------------------------------- calibration


def test_log_prior_exactly_undoes_a_known_class_weighting() -> None:
    z, y = true_logits(100_000, seed=1)
    weighted = z + np.log(W)  # the optimum of a cross-entropy weighted by W
    section = {"method": "log_prior", "params": {"class_weights": W.tolist()}}
    np.testing.assert_allclose(cal.apply_calibration(weighted, section), cal.softmax(z), atol=1e-12)
    # Vector scaling fitted on labels alone recovers the bias: b = -log w (up to a
    # constant, which softmax ignores) and a scale of 1.
    scale, bias = cal.fit_vector(weighted, y)
    np.testing.assert_allclose(scale, 1.0, atol=0.03)
    np.testing.assert_allclose(bias - bias.mean(), -(np.log(W) - np.log(W).mean()), atol=0.06)
    # The fit keeps a correction whose log-loss is the true model's (to sampling noise),
    # far below the weighted model's.
    fitted = cal.fit_calibration(weighted, y, W.tolist())
    assert fitted["method"] in ("log_prior", "vector", "log_prior_temperature")
    truth = cal.log_loss(cal.softmax(z), y)
    assert fitted["val_fit"]["log_loss"] == pytest.approx(truth, abs=2e-3)
    assert fitted["val"]["none"]["log_loss"] > truth + 0.1
    assert fitted["val_fit"]["ece"] < fitted["val"]["none"]["ece"] / 4


@pytest.mark.parametrize("temperature", [0.4, 2.5])
def test_temperature_recovers_a_known_temperature(temperature: float) -> None:
    z, y = true_logits(60_000, seed=2)
    t = cal.fit_temperature(z * temperature, y)  # logits / T are the true ones
    assert t == pytest.approx(temperature, rel=0.03)
    section = {"method": "temperature", "params": {"temperature": t}}
    np.testing.assert_allclose(
        cal.apply_calibration(z * temperature, section), cal.softmax(z), atol=0.02
    )


@pytest.mark.parametrize(
    "case",
    ["calibrated", "overconfident", "weighted", "noise", "tiny", "wrong_weights"],
)
def test_the_fit_never_picks_a_method_worse_than_none_on_val(case: str) -> None:
    z, y = true_logits(400 if case == "tiny" else 20_000, seed=5)
    weights = W.tolist()
    if case == "overconfident":
        z = 4 * z
    elif case == "weighted":
        z = z + np.log(W)
    elif case == "noise":
        y = np.random.default_rng(0).permutation(y)  # the logits say nothing
    elif case == "wrong_weights":
        weights = [1.0, 1000.0, 0.001, 50.0]
    section = cal.fit_calibration(z, y, weights)
    none = section["val"]["none"]["log_loss"]
    assert none == pytest.approx(cal.log_loss(cal.softmax(z), y))
    # The lowest cross-fitted log-loss wins; it is never above none's.
    assert section["method"] == min(section["val"], key=lambda m: section["val"][m]["log_loss"])
    assert section["val"][section["method"]]["log_loss"] <= none
    if case in ("overconfident", "weighted"):
        assert section["method"] != "none"
    assert section["val_fit"]["log_loss"] <= none + 1e-12
    # What the section says is what applying it gives.
    probs = cal.apply_calibration(z, section)
    assert cal.log_loss(probs, y) == pytest.approx(section["val_fit"]["log_loss"])
    assert set(section["val"]) == set(cal.METHODS)
    assert section["fitted_on"] == "val" and section["n"] == y.size
    if case == "wrong_weights":
        assert section["method"] not in ("log_prior",)


def test_a_refit_worse_than_none_falls_back_to_none(monkeypatch: pytest.MonkeyPatch) -> None:
    """The cross-fitted winner is refitted on all of val; were that refit ever worse
    than no calibration there (it cannot be, barring float noise), none is kept."""
    z, y = true_logits(5000, seed=12)
    z = z + np.log(W)
    real = cal.fit_method

    def spoiled(method, logits, labels, weights):
        if method != "none" and len(labels) == len(y):  # only the refit on all of val
            return {"method": "temperature", "params": {"temperature": 0.01}}
        return real(method, logits, labels, weights)

    monkeypatch.setattr(cal, "fit_method", spoiled)
    section = cal.fit_calibration(z, y, W.tolist())
    assert min(s["log_loss"] for s in section["val"].values()) < section["val"]["none"]["log_loss"]
    assert section["method"] == "none" and section["params"] == {}
    assert section["val_fit"] == section["val"]["none"]


def test_without_class_weights_the_log_prior_candidates_are_skipped() -> None:
    z, y = true_logits(3000, seed=6)
    section = cal.fit_calibration(z, y, None)
    assert set(section["val"]) == {"none", "temperature", "vector"}


def test_apply_calibration_refuses_what_it_cannot_apply_in_one_line() -> None:
    z = np.zeros((2, 4))
    for section, needle in [
        ({"method": "platt"}, "unknown method 'platt'"),
        ({"method": "temperature", "params": {"temperature": -1}}, "temperature must be"),
        ({"method": "vector", "params": {"scale": [1, 1], "bias": [0] * 4}}, "params.scale"),
    ]:
        with pytest.raises(cal.CalibrationError, match="the sidecar's calibration") as err:
            cal.apply_calibration(z, section)
        assert needle in str(err.value) and "\n" not in str(err.value)
    np.testing.assert_allclose(cal.apply_calibration(z, None), 0.25)
    np.testing.assert_allclose(cal.apply_calibration(z, {"method": "none"}), 0.25)


# ---------------------------------------------------------------------------- decision


def test_decide_falls_back_to_neutro_and_otherwise_picks_by_p_over_t() -> None:
    section = {"rule": "thresholds", "thresholds": {"Stop": 0.2, "Long": 0.4, "SuperLong": 0.1}}
    probs = np.array(
        [
            [0.70, 0.15, 0.10, 0.05],  # nothing reaches its threshold: Neutro
            [0.10, 0.19, 0.35, 0.09],  # still nothing (each just under): Neutro
            [0.05, 0.30, 0.45, 0.20],  # Stop 1.5, Long 1.125, SuperLong 2.0: SuperLong
            [0.10, 0.40, 0.44, 0.06],  # Stop 2.0, Long 1.1: Stop, though Long is larger
            [0.50, 0.20, 0.20, 0.10],  # Stop 1.0 and SuperLong 1.0 tie: the lower index
            [0.10, 0.10, 0.80, 0.00],  # only Long: Long
        ]
    )
    got = dec.decide(probs, section)
    assert got.dtype == np.int8 and got.tolist() == [0, 0, 3, 1, 1, 2]
    assert dec.decide(probs, None).tolist() == probs.argmax(axis=1).tolist()
    assert dec.decide(probs, {"rule": "argmax"}).tolist() == probs.argmax(axis=1).tolist()


@pytest.mark.parametrize(
    "section, needle",
    [
        ({"rule": "vote"}, "unknown rule 'vote'"),
        ({"rule": "thresholds"}, "without thresholds"),
        ({"rule": "thresholds", "thresholds": {"Neutro": 0.5}}, "fallback class"),
        ({"rule": "thresholds", "thresholds": {"Short": 0.5}}, "unknown class 'Short'"),
        ({"rule": "thresholds", "thresholds": {"Stop": 0}}, "must be in (0, 1]"),
    ],
)
def test_decide_refuses_a_bad_section_in_one_line(section: dict, needle: str) -> None:
    with pytest.raises(dec.DecisionError, match="the sidecar's decision") as err:
        dec.decide(np.full((1, 4), 0.25), section)
    assert needle in str(err.value)


def weighted_model_probs(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Calibrated probabilities of a weakly informative model: argmax almost always
    says Neutro, so the rare classes need thresholds below one half."""
    z, y = true_logits(n, seed, spread=1.0)
    return cal.softmax(z), y


def test_thresholds_chosen_on_val_reach_at_least_argmax_there() -> None:
    probs, y = weighted_model_probs(20_000, seed=8)
    section = dec.fit_decision(probs, y)
    argmax = macro_f1(y, probs.argmax(axis=1))
    chosen = macro_f1(y, dec.decide(probs, section))
    assert section["rule"] == "thresholds" and chosen > argmax + 0.05
    assert section["val"]["argmax"] == pytest.approx(argmax)
    assert section["val"]["thresholds"] == pytest.approx(chosen)  # what decide() gives
    assert set(section["thresholds"]) == {"Stop", "Long", "SuperLong"}
    assert section["objective"] == "macro_f1" and section["fitted_on"] == "val"
    # Coordinate ascent ends where no single threshold of its grid does better.
    t = dec.threshold_vector(section["thresholds"])
    for k in (1, 2, 3):
        for candidate in dec.candidate_thresholds(probs[:, k]):
            trial = t.copy()
            trial[k] = candidate
            assert macro_f1(y, dec.decide_thresholds(probs, trial)) <= chosen + 1e-12
    # The gain holds on fresh windows of the same distribution (not fitted to noise).
    fresh, y2 = weighted_model_probs(20_000, seed=9)
    assert macro_f1(y2, dec.decide(fresh, section)) > macro_f1(y2, fresh.argmax(axis=1))


def test_a_class_the_labels_never_hold_is_turned_off() -> None:
    """Threshold 1 (a probability below 1 never reaches it) is a candidate: predicting a
    class that never occurs only adds a class of F1 0 to the macro average."""
    probs, y = weighted_model_probs(8000, seed=13)
    y = np.where(y == 3, 0, y)  # no SuperLong, as on a random walk
    section = dec.fit_decision(probs, y)
    assert section["rule"] == "thresholds" and section["thresholds"]["SuperLong"] == 1.0
    assert not (dec.decide(probs, section) == 3).any()


def test_argmax_is_kept_when_thresholds_do_not_beat_it() -> None:
    # Labels that are exactly the argmax: nothing beats it (macro-F1 1).
    probs, _ = weighted_model_probs(3000, seed=10)
    y = probs.argmax(axis=1)
    section = dec.fit_decision(probs, y)
    assert section["rule"] == "argmax" and "thresholds" not in section
    assert macro_f1(y, dec.decide(probs, section)) >= section["val"]["thresholds"]

    with pytest.raises(dec.DecisionError, match="--objective: unknown objective 'pnl'"):
        dec.fit_decision(probs, y, "pnl")


def test_any_objective_plugs_in_with_per_window_data_looked_up_by_row() -> None:
    """A backtest-like objective: the return of each window where the rule goes long,
    looked up by the window's row (cross-fitting folds score subsets)."""
    probs, y = weighted_model_probs(6000, seed=11)
    returns = np.where(y >= 2, 1.0, -0.4)  # long pays when the label is Long or SuperLong
    seen: list[int] = []

    def expectancy(y_true: np.ndarray, y_pred: np.ndarray, rows: np.ndarray) -> float:
        assert np.array_equal(y_true, y[rows])  # rows say which windows these are
        seen.append(rows.size)
        return float(np.sum(returns[rows] * (y_pred >= 2)) / max(rows.size, 1))

    section = dec.fit_decision(probs, y, expectancy)
    assert section["objective"] == "expectancy" and section["rule"] == "thresholds"
    assert set(seen) > {y.size}  # every fold's subset, and the whole of val
    everything = np.arange(y.size)
    assert expectancy(y, dec.decide(probs, section), everything) > expectancy(
        y, probs.argmax(axis=1), everything
    )


# ---------------------------------------------------------------------------- the sidecar


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A small lake and a randomly initialised checkpoint with a real sidecar (as in
    test_evaluate), plus a pristine copy of both files to reset from."""
    root = tmp_path_factory.mktemp("calibration")
    write_raw(root / "raw", n_bars=20_000, seed=3)
    prepare_lake(root / "raw", root / "lake", row_group_rows=2048, log=lambda _: None)
    cfg = Config(
        paths=PathsConfig(data_dir=root / "lake", checkpoint=root / "ckpt" / "model.pth"),
        data=DataConfig(seq_len=SEQ_LEN, val_fraction=0.2, test_fraction=0.2),
        model=ModelConfig(d_model=8, n_heads=2, n_layers=1, d_ff=16, dropout=0.0),
        train=TrainConfig(batch_size=64),
    )
    data = build_data(cfg)
    model = components.build_model(cfg, data.index.num_features)
    with torch.no_grad():
        model.head[-1].weight.mul_(30.0)  # predictions that depend on the input
    save_best(model, cfg.paths.checkpoint, {**sidecar_for(cfg, data, model), "epoch": 2})
    return {"root": root, "lake": root / "lake", "checkpoint": cfg.paths.checkpoint}


def fresh_checkpoint(tiny: dict, where: Path) -> Path:
    ckpt = where / "model.pth"
    ckpt.write_bytes(tiny["checkpoint"].read_bytes())
    sidecar_path(ckpt).write_bytes(sidecar_path(tiny["checkpoint"]).read_bytes())
    return ckpt


def test_the_sidecar_is_rewritten_atomically_and_a_failure_keeps_the_old_one(
    tiny: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ckpt = fresh_checkpoint(tiny, tmp_path)
    before = sidecar_path(ckpt).read_bytes()

    def no_rename(src, dst):
        raise OSError(28, "No space left on device")

    with monkeypatch.context() as m:
        m.setattr(atomic.os, "replace", no_rename)
        with pytest.raises(OSError):
            fc.write_sections(ckpt, {"calibration": {"method": "none"}})
    assert sidecar_path(ckpt).read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.json", "model.pth"]  # no temp

    path = fc.write_sections(ckpt, {"calibration": {"method": "none"}, "decision": {}})
    written = json.loads(path.read_text())
    assert written["calibration"] == {"method": "none"} and written["decision"] == {}
    assert {k: v for k, v in written.items() if k not in fc.SECTIONS} == json.loads(before)


def test_a_failed_fit_after_training_warns_once_and_keeps_the_sidecar(
    tiny: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog
) -> None:
    ckpt = fresh_checkpoint(tiny, tmp_path)
    before = sidecar_path(ckpt).read_bytes()

    def broken(*args, **kwargs):
        raise RuntimeError("singular matrix\nsecond line")

    monkeypatch.setattr(fc, "fit_sections", broken)
    with caplog.at_level(logging.WARNING):
        assert fc.calibrate_after_training(ckpt, [ckpt], data_dir=tiny["lake"]) is None
    [record] = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert record.getMessage() == (
        f"[CALIBRATE] {ckpt} kept uncalibrated: RuntimeError: singular matrix; "
        f"retry with saimp calibrate --checkpoint {ckpt}"
    )
    assert sidecar_path(ckpt).read_bytes() == before


# ---------------------------------------------------------------------------- commands


def test_calibrate_cli_end_to_end_then_evaluate_uses_it(tiny: dict, tmp_path: Path, capsys) -> None:
    ckpt = fresh_checkpoint(tiny, tmp_path)
    argv = ["--checkpoint", str(ckpt), "--data-dir", str(tiny["lake"])]
    assert run_cli(calibrate_cli.main, argv) == 0
    out = capsys.readouterr().out
    assert out.strip().splitlines()[-1] == str(sidecar_path(ckpt))
    for needle in ("val log-loss", "val ECE", "<- chosen", "decision rule:", "macro_f1"):
        assert needle in out
    sidecar = json.loads(sidecar_path(ckpt).read_text())
    c, d = sidecar["calibration"], sidecar["decision"]
    assert c["method"] in cal.METHODS and c["fitted_on"] == "val" and c["n"] > 100
    assert set(c["val"]) == set(cal.METHODS)
    for scores in c["val"].values():
        assert set(scores) == {"log_loss", "ece"}
    assert d["rule"] in dec.RULES and d["objective"] == "macro_f1" and d["n"] == c["n"]
    assert {"argmax", "thresholds", "argmax_uncalibrated"} <= set(d["val"])

    # Evaluate: the headline stays the raw argmax, the sidecar's calibration and rule
    # are reported beside it, and the reliability diagram is written.
    eval_argv = [*argv, "--out", str(tmp_path), "--null-draws", "0"]
    assert run_cli(evaluate_main, eval_argv) == 0
    out = capsys.readouterr().out
    report = json.loads((tmp_path / "model_test_report.json").read_text())
    assert report["version"] == 2
    y, raw_pred, logits = direct_predictions(
        ckpt, tiny["lake"], sidecar["split"]["test_start_ms"], with_logits=True
    )
    assert report["confusion_matrix"] == metrics.confusion_matrix(y, raw_pred, 4).tolist()
    probs = cal.apply_calibration(logits, c)
    rule = dec.decide(probs, d)
    rep_cal, rep_dec = report["calibration"], report["decision"]
    assert rep_dec["confusion_matrix"] == metrics.confusion_matrix(y, rule, 4).tolist()
    assert rep_dec["rule"] == d["rule"] and rep_dec["macro_f1"] == pytest.approx(macro_f1(y, rule))
    assert rep_dec["argmax_calibrated"]["macro_f1"] == pytest.approx(
        macro_f1(y, probs.argmax(axis=1))
    )
    assert rep_cal["method"] == c["method"]
    assert rep_cal["after"]["ece"] == pytest.approx(
        cal.expected_calibration_error(probs, y), abs=1e-6
    )
    assert rep_cal["before"]["log_loss"] == pytest.approx(
        cal.log_loss(cal.softmax(logits), y), abs=1e-5
    )
    png = Path(rep_cal["png"])
    assert png == tmp_path / "model_test_report_reliability.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert f"calibration: {c['method']} (the sidecar's" in out
    assert "argmax (raw model)" in out and f"rule: {d['rule']}" in out
    assert f"reliability diagram {png}" in out


def test_evaluate_without_calibration_reports_the_plain_softmax(
    tiny: dict, tmp_path: Path, capsys
) -> None:
    ckpt = fresh_checkpoint(tiny, tmp_path)
    argv = ["--checkpoint", str(ckpt), "--out", str(tmp_path), "--null-draws", "0"]
    assert run_cli(evaluate_main, argv) == 0
    out = capsys.readouterr().out
    report = json.loads((tmp_path / "model_test_report.json").read_text())
    assert report["calibration"]["method"] == "none"
    assert report["calibration"]["before"] == report["calibration"]["after"]
    assert report["decision"]["rule"] == "argmax"
    assert report["decision"]["confusion_matrix"] == report["confusion_matrix"]
    assert "calibration: none in the sidecar" in out
    assert (tmp_path / "model_test_report_reliability.png").stat().st_size > 10_000


@pytest.mark.parametrize(
    "case, needle",
    [
        ("missing", "not found"),
        ("last_state", "calibrate a best checkpoint"),
        ("objective", "--objective: invalid choice: 'pnl'"),
        ("lake", "--data-dir"),
    ],
)
def test_calibrate_user_errors_are_one_line_and_exit_2(
    case: str, needle: str, tiny: dict, tmp_path: Path, capsys
) -> None:
    from src.modelling.checkpointing.best import load_state_dict_file
    from src.modelling.checkpointing.last import save_training_state

    ckpt = fresh_checkpoint(tiny, tmp_path)
    argv = ["--checkpoint", str(ckpt), "--data-dir", str(tiny["lake"])]
    if case == "missing":
        argv[1] = str(tmp_path / "nope.pth")
    elif case == "last_state":
        last = tmp_path / "saimp_last.pth"
        sidecar = json.loads(sidecar_path(ckpt).read_text())
        save_training_state(last, {"model": load_state_dict_file(ckpt), "sidecar": sidecar})
        argv[1] = str(last)
    elif case == "objective":
        argv += ["--objective", "pnl"]
    elif case == "lake":
        argv[3] = str(tmp_path / "no_lake")
    before = sidecar_path(ckpt).read_bytes()
    assert run_cli(calibrate_cli.main, argv) == 2
    err = capsys.readouterr().err
    [line] = err.strip().splitlines()
    assert line.startswith("error: ") and needle in line, line
    assert sidecar_path(ckpt).read_bytes() == before


def test_training_ends_by_calibrating_its_best_checkpoints(tmp_path: Path, tiny_lake: Path) -> None:
    result = run_training(tiny_config(tmp_path, tiny_lake), World(), torch.device("cpu"))
    shared = tmp_path / "data" / "best.pth"
    assert result.best_checkpoint == shared
    [own] = (tmp_path / "runs").glob("*/best.pth")
    for ckpt in (shared, own):
        sidecar = json.loads(sidecar_path(ckpt).read_text())
        assert sidecar["calibration"]["fitted_on"] == "val", ckpt
        assert sidecar["decision"]["rule"] in dec.RULES, ckpt
    first = json.loads(sidecar_path(shared).read_text())
    assert json.loads(sidecar_path(own).read_text())["calibration"] == first["calibration"]


def test_training_keeps_an_uncalibrated_sidecar_when_calibration_fails(
    tmp_path: Path, tiny_lake: Path, monkeypatch: pytest.MonkeyPatch, caplog
) -> None:
    monkeypatch.setattr(fc, "fit_sections", lambda *a, **k: 1 / 0)
    with caplog.at_level(logging.WARNING):
        result = run_training(tiny_config(tmp_path, tiny_lake), World(), torch.device("cpu"))
    sidecar = json.loads(sidecar_path(result.best_checkpoint).read_text())
    assert "calibration" not in sidecar and "metrics" in sidecar
    [warning] = [r.getMessage() for r in caplog.records if "[CALIBRATE]" in r.getMessage()]
    assert "kept uncalibrated: ZeroDivisionError" in warning


def test_a_class_turned_off_stays_off_even_at_probability_one() -> None:
    """A threshold of 1 turns a class off; a float64 softmax rounds to exactly 1.0 once
    one logit leads by about 37, which must not reach it."""
    probs = cal.softmax(np.array([[0.0, 0.0, 40.0, 0.0], [0.0, 0.0, 0.0, 40.0]]))
    assert probs[0, 2] == 1.0
    section = {"rule": "thresholds", "thresholds": {"Stop": 0.5, "Long": 1.0, "SuperLong": 0.5}}
    assert dec.decide(probs, section).tolist() == [0, 3]
