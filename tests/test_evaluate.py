"""`src.modelling.evaluation.report` and `python -m src.modelling.evaluate`.

The report's numbers are checked against counts made by hand in plain Python, and the
end-to-end test rebuilds the test split's windows straight from the Parquet files (not
through the loader) and runs the checkpoint on them, so a split, normalisation or
ordering bug in the evaluation path cannot hide behind the same code computing both sides.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from src.config import Config, DataConfig, ModelConfig, PathsConfig, TrainConfig
from src.core import constants as C
from src.core.errors import run_cli
from src.data.dataloader import build_data
from src.data.prepare import prepare_lake
from src.data.split import iso
from src.data.synthetic import write_raw
from src.modelling.checkpointing.best import load_state_dict_file, save_best, sidecar_path
from src.modelling.checkpointing.sidecar import sidecar_for
from src.modelling.evaluate import load_model, main, plot_confusion
from src.modelling.evaluation import metrics
from src.modelling.evaluation import report as rp
from src.modelling.training import components
from tests.test_label_truth import rewrite_lake

K = len(C.CLASS_NAMES)
NAMES = C.CLASS_NAMES


# ---------------------------------------------------------------------------- by hand


def hand_metrics(y_true: list[int], y_pred: list[int]) -> dict:
    """Per-class precision/recall/F1/support, macro-F1 (classes present in labels or
    predictions, as sklearn's default), balanced accuracy (classes present in labels),
    accuracy and the confusion matrix, with plain Python loops."""
    cm = [[0] * K for _ in range(K)]
    for t, p in zip(y_true, y_pred, strict=True):
        cm[t][p] += 1
    per_class, f1s, recalls = {}, [], []
    for c in range(K):
        tp = cm[c][c]
        fp = sum(cm[r][c] for r in range(K)) - tp
        fn = sum(cm[c]) - tp
        precision = tp / (tp + fp) if tp + fp else 0.0
        recall = tp / (tp + fn) if tp + fn else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        per_class[NAMES[c]] = {
            "precision": precision,
            "recall": recall,
            "f1": f1,
            "support": tp + fn,
        }
        if tp + fn + fp:
            f1s.append(f1)
        if tp + fn:
            recalls.append(recall)
    return {
        "per_class": per_class,
        "macro_f1": sum(f1s) / len(f1s),
        "balanced_accuracy": sum(recalls) / len(recalls),
        "accuracy": sum(cm[c][c] for c in range(K)) / len(y_true),
        "confusion_matrix": cm,
        "n_samples": len(y_true),
    }


def assert_matches(report: dict, expected: dict) -> None:
    assert report["confusion_matrix"] == expected["confusion_matrix"]
    assert report["n_samples"] == expected["n_samples"]
    for key in ("macro_f1", "balanced_accuracy", "accuracy"):
        assert report[key] == pytest.approx(expected[key], abs=1e-12), key
    for name in NAMES:
        got, want = report["per_class"][name], expected["per_class"][name]
        assert got["support"] == want["support"], name
        for key in ("precision", "recall", "f1"):
            assert got[key] == pytest.approx(want[key], abs=1e-12), (name, key)


def imbalanced(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.choice(K, size=n, p=[0.82, 0.08, 0.07, 0.03])
    # A weak, noisy predictor: right 40 % of the time, else a class drawn at random.
    pred = np.where(rng.random(n) < 0.4, y, rng.integers(0, K, n))
    return y, pred


# ---------------------------------------------------------------------------- pure report


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_report_numbers_equal_hand_computation(seed: int) -> None:
    y, pred = imbalanced(700, seed)
    report = rp.build_report(y, pred, null_draws=0)
    assert_matches(report, hand_metrics(y.tolist(), pred.tolist()))
    dist = report["label_distribution"]
    assert [dist[n]["count"] for n in NAMES] == np.bincount(y, minlength=K).tolist()
    assert report["prediction_distribution"]["Neutro"]["count"] == int((pred == 0).sum())


def test_absent_classes_follow_sklearn_convention() -> None:
    # SuperLong never occurs and is never predicted: left out of macro-F1. Long is
    # predicted but never true: counted in macro-F1 with F1 0, not in balanced accuracy.
    y = [0, 0, 0, 0, 1, 1, 0, 1]
    pred = [0, 0, 2, 0, 1, 0, 0, 1]
    report = rp.build_report(np.array(y), np.array(pred), null_draws=0)
    expected = hand_metrics(y, pred)
    assert_matches(report, expected)
    f0, f1 = expected["per_class"]["Neutro"]["f1"], expected["per_class"]["Stop"]["f1"]
    assert report["macro_f1"] == pytest.approx((f0 + f1 + 0.0) / 3)
    assert report["balanced_accuracy"] == pytest.approx((4 / 5 + 2 / 3) / 2)


def test_majority_baseline_uses_training_counts_and_says_so() -> None:
    y, pred = imbalanced(500, 3)
    report = rp.build_report(
        y, pred, train_counts=np.array([10, 50, 5, 5]), train_counts_from="training split"
    )
    maj = report["baselines"]["majority"]
    assert maj["predicted_class"] == "Stop" and maj["class_from"] == "training split"
    assert_matches(maj, hand_metrics(y.tolist(), [1] * y.size))

    fallback = rp.build_report(y, pred, train_counts=None, null_draws=0)["baselines"]["majority"]
    assert fallback["predicted_class"] == "Neutro"
    assert fallback["class_from"] == "evaluated split"
    assert_matches(fallback, hand_metrics(y.tolist(), [0] * y.size))
    p = float((y == 0).mean())
    assert fallback["per_class"]["Neutro"]["f1"] == pytest.approx(2 * p / (1 + p))


def test_random_baseline_is_the_exact_expectation_of_guessing_at_frequencies() -> None:
    y, pred = imbalanced(400, 4)
    rnd = rp.build_report(y, pred, null_draws=0)["baselines"]["random"]
    support = np.bincount(y, minlength=K)
    p = support / support.sum()
    expected_cm = np.outer(support, p)
    np.testing.assert_allclose(rnd["confusion_matrix"], expected_cm)
    # Guessing at the label frequencies: precision_i = p_i, recall_i = p_i, so F1_i = p_i,
    # macro-F1 = 1 / 4 and balanced accuracy = 1 / 4 exactly.
    for i, name in enumerate(NAMES):
        assert rnd["per_class"][name]["f1"] == pytest.approx(p[i])
        assert rnd["probabilities"][name] == pytest.approx(p[i])
    assert rnd["macro_f1"] == pytest.approx(0.25)
    assert rnd["balanced_accuracy"] == pytest.approx(0.25)
    assert rnd["accuracy"] == pytest.approx(float((p * p).sum()))
    assert "analytic" in rnd["method"]

    # ... and it is what sampling converges to (the mean confusion matrix of many guessers).
    rng = np.random.default_rng(0)
    sims = np.mean(
        [metrics.confusion_matrix(y, rng.choice(K, size=y.size, p=p), K) for _ in range(3000)],
        axis=0,
    )
    np.testing.assert_allclose(sims, expected_cm, atol=0.06 * expected_cm.max())


def test_random_baseline_is_the_best_label_blind_guess() -> None:
    support = np.array([820.0, 80.0, 70.0, 30.0])
    p = support / support.sum()
    best = metrics.macro_f1(metrics.random_confusion(support, p))
    rng = np.random.default_rng(1)
    for q in rng.dirichlet(np.ones(K), size=200):
        assert metrics.macro_f1(metrics.random_confusion(support, q)) <= best + 1e-12


def test_shift_null_spread_significance_and_edge_cases() -> None:
    y, pred = imbalanced(2000, 5)
    chance = rp.shift_null(y, pred, draws=300, min_shift=50, seed=1)
    assert chance["observed"] == pytest.approx(
        metrics.macro_f1(metrics.confusion_matrix(y, pred, K))
    )
    assert chance["null_sd"] > 0 and chance["z"] > 4
    assert chance["p_value"] == pytest.approx(1 / 301)
    # Same seed, same draws.
    assert rp.shift_null(y, pred, draws=300, min_shift=50, seed=1) == chance
    # Predictions unrelated to the labels: not significant.
    noise = np.random.default_rng(9).permutation(pred)
    assert rp.shift_null(y, noise, draws=300, min_shift=50)["p_value"] > 0.01
    # A constant prediction scores the same under every shift: no spread, no z.
    const = rp.shift_null(y, np.zeros_like(y), draws=50, min_shift=50)
    assert const["null_sd"] == pytest.approx(0.0, abs=1e-12) and const["z"] is None
    assert rp.shift_null(y[:99], pred[:99], draws=10, min_shift=50) is None
    assert rp.shift_null(y, pred, draws=0) is None


def test_console_table_lists_classes_baselines_and_confusion() -> None:
    y, pred = imbalanced(300, 6)
    text = rp.format_report(rp.build_report(y, pred, null_draws=100))
    for word in (*NAMES, "macro-F1", "balanced acc", "F1 majority", "F1 random", "confusion"):
        assert word in text
    assert "chance level" in text


# ---------------------------------------------------------------------------- end to end

SEQ_LEN = 8


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A small lake and a randomly initialised checkpoint with a real sidecar."""
    root = tmp_path_factory.mktemp("eval")
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
    # Random weights predict one class; larger output weights make the predictions
    # depend on the input, so every cell of the report is exercised.
    with torch.no_grad():
        model.head[-1].weight.mul_(30.0)
    save_best(model, cfg.paths.checkpoint, {**sidecar_for(cfg, data, model), "epoch": 3})
    return {"root": root, "cfg": cfg, "checkpoint": cfg.paths.checkpoint}


def lake_rows(lake: Path, features: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    tables = [pq.read_table(p) for p in sorted(lake.glob("*.parquet"))]
    ts = np.concatenate([t.column("timestamp").cast("int64").to_numpy() for t in tables])
    x = np.concatenate(
        [np.stack([t.column(f).to_numpy() for f in features], axis=1) for t in tables]
    )
    y = np.concatenate([t.column("label").to_numpy() for t in tables]).astype(np.int64)
    assert np.all(np.diff(ts) == 60_000), "the hand-made windows assume gap-free bars"
    return ts, x.astype(np.float32), y


def direct_predictions(
    checkpoint: Path, lake: Path, start_ms: int, *, with_logits: bool = False
) -> tuple[np.ndarray, ...]:
    """Windows ending at every bar >= start_ms, normalised by hand, run through the model:
    labels, argmax predictions (and the logits, float32 (N, C), `with_logits`)."""
    sidecar = json.loads(sidecar_path(checkpoint).read_text())
    norm = sidecar["normalizer"]
    ts, x, y = lake_rows(lake, sidecar["features"])
    x = (x - np.asarray(norm["mean"], np.float32)) * (1.0 / np.asarray(norm["std"])).astype(
        np.float32
    )
    ends = np.flatnonzero((ts >= start_ms) & (np.arange(ts.size) >= SEQ_LEN - 1))
    windows = np.stack([x[e - SEQ_LEN + 1 : e + 1] for e in ends])
    model, _ = load_model(checkpoint)
    model.load_state_dict(load_state_dict_file(checkpoint))
    with torch.no_grad():
        logits = torch.cat([model(torch.from_numpy(b)) for b in np.array_split(windows, 7)])
    if with_logits:
        return y[ends], logits.argmax(dim=1).numpy(), logits.numpy()
    return y[ends], logits.argmax(dim=1).numpy()


def assert_same_chance(report: dict, y: np.ndarray, pred: np.ndarray) -> None:
    """The chance level depends on the order of the windows: equal only if in time order."""
    c = report["chance"]
    again = rp.shift_null(y, pred, draws=c["draws"], min_shift=c["min_shift"], seed=c["seed"])
    assert again == pytest.approx(c)


def run_main(argv: list[str], capsys: pytest.CaptureFixture) -> tuple[int, str, str]:
    code = run_cli(main, argv)
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_report_equals_direct_computation(trained: dict, tmp_path: Path, capsys) -> None:
    ckpt = trained["checkpoint"]
    code, out, err = run_main(
        ["--checkpoint", str(ckpt), "--out", str(tmp_path), "--null-draws", "200"], capsys
    )
    assert code == 0, err
    json_path = tmp_path / "model_test_report.json"
    assert out.strip().splitlines()[-1] == str(json_path)
    report = json.loads(json_path.read_text())
    png = tmp_path / "model_test_report.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and report["png"] == str(png)

    sidecar = json.loads(sidecar_path(ckpt).read_text())
    y, pred = direct_predictions(
        ckpt, trained["cfg"].paths.data_dir, sidecar["split"]["test_start_ms"]
    )
    assert len(set(pred.tolist())) >= 3, "the check needs varied predictions"
    assert_matches(report, hand_metrics(y.tolist(), pred.tolist()))
    assert_same_chance(report, y, pred)
    assert report["chance"]["min_shift"] == 120 + SEQ_LEN  # label horizon + window
    for key in ("macro_f1", "balanced_accuracy", "per_class", "confusion_matrix", "n_samples"):
        assert key in report
    for name in ("majority", "random"):
        for key in ("macro_f1", "balanced_accuracy", "per_class", "confusion_matrix"):
            assert key in report["baselines"][name], (name, key)
    assert report["split"] == "test" and report["epoch"] == 3
    assert report["split_bounds"]["test_start_ms"] == sidecar["split"]["test_start_ms"]
    # Majority class from the training split of the lake.
    assert report["baselines"]["majority"]["class_from"].startswith("training split")
    # The weighted loss is the training's val_loss definition.
    assert report["loss_class_weights"] == list(TrainConfig().class_weights)
    assert np.isfinite(report["loss"])
    for word in ("macro-F1", "balanced acc", "F1 random", "Neutro"):
        assert word in out


def test_sidecar_bounds_define_the_split(trained: dict, tmp_path: Path, capsys) -> None:
    """The test split is where the *training run* put it, not what the lake's extent gives."""
    ckpt = tmp_path / "moved.pth"
    ckpt.write_bytes(trained["checkpoint"].read_bytes())
    sidecar = json.loads(sidecar_path(trained["checkpoint"]).read_text())
    later = sidecar["split"]["test_start_ms"] + 12 * 3_600_000 + 7  # 12 h and 7 ms later
    sidecar["split"]["test_start_ms"] = later
    sidecar["config"]["data"]["test_fraction"] = 0.5  # must be ignored
    sidecar_path(ckpt).write_text(json.dumps(sidecar))
    code, _, err = run_main(
        [
            "--checkpoint",
            str(ckpt),
            "--data-dir",
            str(trained["cfg"].paths.data_dir),
            "--null-draws",
            "0",
        ],
        capsys,
    )
    assert code == 0, err
    report = json.loads((tmp_path / "moved_test_report.json").read_text())
    y, pred = direct_predictions(ckpt, trained["cfg"].paths.data_dir, later)
    assert report["n_samples"] == y.size
    assert report["split_bounds"]["test_start"] == iso(later)
    assert_matches(report, hand_metrics(y.tolist(), pred.tolist()))
    assert report["chance"] is None


@pytest.mark.parametrize("split", ["val", "train"])
def test_other_splits_in_time_order(split: str, trained: dict, tmp_path: Path, capsys) -> None:
    argv = ["--checkpoint", str(trained["checkpoint"]), "--split", split, "--out", str(tmp_path)]
    assert run_main(argv, capsys)[0] == 0
    report = json.loads((tmp_path / f"model_{split}_report.json").read_text())
    assert report["split"] == split and report["n_samples"] > 0
    if split == "train":  # the training windows are the first ones in time
        y, pred = direct_predictions(trained["checkpoint"], trained["cfg"].paths.data_dir, 0)
        n = report["n_samples"]
        assert_matches(report, hand_metrics(y[:n].tolist(), pred[:n].tolist()))
        assert_same_chance(report, y[:n], pred[:n])  # streamed in time order, not shuffled
    assert plot_confusion(report, tmp_path / "again.png").stat().st_size > 0


@pytest.mark.parametrize(
    "case, needle",
    [
        ("missing_checkpoint", "not found"),
        ("missing_sidecar", "sidecar"),
        ("empty_split", "test split has no windows"),
        ("missing_data", "does not exist"),
        ("bad_flag", "--split"),
    ],
)
def test_user_errors_are_one_line_and_exit_2(
    case: str, needle: str, trained: dict, tmp_path: Path, capsys
) -> None:
    ckpt = tmp_path / "model.pth"
    ckpt.write_bytes(trained["checkpoint"].read_bytes())
    sidecar = json.loads(sidecar_path(trained["checkpoint"]).read_text())
    argv = ["--checkpoint", str(ckpt), "--data-dir", str(trained["cfg"].paths.data_dir)]
    if case == "missing_checkpoint":
        argv[1] = str(tmp_path / "nope.pth")
    elif case == "empty_split":
        sidecar["split"]["test_start_ms"] += 365 * 86_400_000  # after the lake's last bar
    elif case == "missing_data":
        argv[3] = str(tmp_path / "no_lake")
    elif case == "bad_flag":
        argv += ["--split", "future"]
    if case != "missing_sidecar":
        sidecar_path(ckpt).write_text(json.dumps(sidecar))
    code, out, err = run_main(argv, capsys)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], err
    assert not list(tmp_path.glob("*_report.json"))


# -- checkpoints from elsewhere --------------------------------------------------------------


def test_a_checkpoint_saved_from_ddp_or_compile_loads(trained: dict, tmp_path: Path) -> None:
    state = load_state_dict_file(trained["checkpoint"])
    for prefix in ("module.", "_orig_mod.module."):
        ckpt = tmp_path / f"{prefix.strip('.')}.pth"
        torch.save({prefix + k: v for k, v in state.items()}, ckpt)
        sidecar_path(ckpt).write_text(sidecar_path(trained["checkpoint"]).read_text())
        model, _ = load_model(ckpt)
        for (name, a), b in zip(model.state_dict().items(), state.values(), strict=True):
            assert torch.equal(a, b), name


def test_a_mismatched_checkpoint_names_the_keys_and_the_shape(
    trained: dict, tmp_path: Path, capsys
) -> None:
    state = load_state_dict_file(trained["checkpoint"])
    first = next(iter(state))
    state[first] = torch.zeros(3, 3)
    del state[list(state)[-1]]
    state["extra.weight"] = torch.zeros(1)
    ckpt = tmp_path / "bad.pth"
    torch.save(state, ckpt)
    sidecar_path(ckpt).write_text(sidecar_path(trained["checkpoint"]).read_text())
    code, _, err = run_main(["--checkpoint", str(ckpt)], capsys)
    assert code == 2
    [line] = err.strip().splitlines()
    assert "missing keys: head." in line and "unexpected keys: extra.weight" in line
    assert f"first: {first} is (3, 3) in the file but" in line


def test_evaluate_reads_the_weights_inside_a_last_state(trained: dict, tmp_path: Path) -> None:
    from src.modelling.checkpointing.last import save_training_state

    sidecar = json.loads(sidecar_path(trained["checkpoint"]).read_text())
    weights = load_state_dict_file(trained["checkpoint"])
    last = tmp_path / "saimp_last.pth"
    save_training_state(last, {"model": weights, "sidecar": sidecar, "loop": {}})
    model, got = load_model(last)
    assert got == sidecar
    assert all(torch.equal(a, weights[k]) for k, a in model.state_dict().items())


# -- lakes that are not the checkpoint's, and splits that make no score --------------------


@pytest.mark.parametrize(
    "change, needle",
    [
        (
            {"meta": lambda info: {**info, "bar_ms": 120_000}},
            "its bar interval differs from the checkpoint's (lake vs checkpoint: "
            "bar_ms 120000 vs 60000)",
        ),
        (
            {"meta": lambda info: {**info, "label": {**info["label"], "upper1_pct": 1.2}}},
            "its labels differ from the checkpoint's (lake vs checkpoint: "
            "label.upper1_pct 1.2 vs 0.8)",
        ),
        (
            {"rename": {"imbalance": "imbalance_v2"}},
            "its features differ from the checkpoint's (lake lacks imbalance; "
            "lake has imbalance_v2 besides)",
        ),
    ],
)
def test_a_lake_unlike_the_checkpoints_is_refused_naming_the_difference(
    change: dict, needle: str, trained: dict, tmp_path: Path, capsys
) -> None:
    lake = rewrite_lake(trained["cfg"].paths.data_dir, tmp_path / "lake", **change)
    argv = ["--checkpoint", str(trained["checkpoint"]), "--data-dir", str(lake)]
    code, _, err = run_main([*argv, "--out", str(tmp_path), "--null-draws", "0"], capsys)
    assert code == 2
    [line] = err.strip().splitlines()
    assert line.startswith(f"error: --data-dir {lake}: ") and needle in line, line
    assert line.endswith("evaluate on a lake prepared with the checkpoint's settings")
    assert not list(tmp_path.glob("*_report.json"))


def test_a_single_class_report_says_its_summary_is_no_score() -> None:
    y = np.zeros(300, dtype=np.int64)
    pred = np.where(np.arange(300) % 3 == 0, 1, 0)
    report = rp.build_report(y, pred, null_draws=50)
    assert report["warning"].startswith("the evaluated split holds only Neutro windows: ")
    text = rp.format_report(report)
    for label in ("macro-F1", "balanced acc", "accuracy"):  # not printed as scores
        [row] = [r for r in text.splitlines() if r.startswith(label)]
        _, model, baselines = row.split("|")
        assert model.split() == ["n/a", "300"] and baselines.split() == ["n/a", "n/a"]
    assert "n/a: the evaluated split holds only Neutro" in text
    assert "chance level" not in text
    assert "warning" not in rp.build_report(*imbalanced(200, 0), null_draws=0)


def test_evaluate_warns_on_a_single_class_split(trained: dict, tmp_path: Path, capsys) -> None:
    lake = rewrite_lake(trained["cfg"].paths.data_dir, tmp_path / "lake", labels=np.ones_like)
    argv = ["--checkpoint", str(trained["checkpoint"]), "--data-dir", str(lake)]
    code, out, err = run_main([*argv, "--out", str(tmp_path), "--null-draws", "0"], capsys)
    assert code == 0, err
    report = json.loads((tmp_path / "model_test_report.json").read_text())
    assert "macro-F1, balanced accuracy and accuracy are not scores" in report["warning"]
    assert "n/a: the evaluated split holds only Stop windows" in out
