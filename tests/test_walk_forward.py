"""Walk-forward: fold bounds, pooling, and the command end to end (files, pooled numbers,
kill and continue, refused reruns, a finished rerun that recomputes nothing)."""

from __future__ import annotations

import json
import math
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from src.core.errors import UserError
from src.data.split import assign_split
from src.modelling.evaluation import metrics as M
from src.modelling.training.faults import KILL_AT_WINDOW_ENV
from src.modelling.walkforward.fold_run import FAULT_FOLD_ENV
from src.modelling.walkforward.folds import block_edges, fold_bounds
from src.modelling.walkforward.pooled import (
    Segment,
    classification,
    join_all,
    pooled_random,
    trading_stats,
)
from tests.test_train_cli import ENV

DAY = 86_400_000
T0 = 1_704_067_200_000  # 2024-01-01

# ---------------------------------------------------------------------------- fold bounds


@pytest.mark.parametrize("rolling", [False, True])
@pytest.mark.parametrize("k_folds", [1, 3, 5])
def test_folds_cut_equal_blocks_and_test_the_last_k_consecutively(rolling, k_folds) -> None:
    t_min, t_max = T0, T0 + 100 * DAY - 1
    folds = fold_bounds(
        t_min, t_max, folds=k_folds, rolling=rolling, val_fraction=0.2, embargo_minutes=120
    )
    edges = block_edges(t_min, t_max, k_folds + 1)
    assert len(edges) == k_folds + 2 and edges[0] == t_min and edges[-1] == t_max + 1
    sizes = np.diff(edges)
    assert sizes.max() - sizes.min() <= 1  # equal blocks, to the millisecond
    assert [f.k for f in folds] == list(range(1, k_folds + 1))
    # The tests are blocks 1..K, consecutive, covering the time after block 0.
    assert [(f.test_start_ms, f.test_end_ms) for f in folds] == list(
        zip(edges[1:-1], edges[2:], strict=True)
    )
    for f in folds:
        assert f.train_from_ms == (edges[f.k - 1] if rolling else t_min)
        assert f.train_from_ms < f.val_start_ms < f.test_start_ms < f.test_end_ms
        # Validation is the last val_fraction of the training range (rounded up to 1 ms).
        length = f.test_start_ms - f.train_from_ms
        assert abs((f.test_start_ms - f.val_start_ms) - 0.2 * length) <= 1
        b = f.bounds
        assert b.embargo_ms == 120 * 60_000
        assert b.train_start_ms == (f.train_from_ms if rolling else None)


@pytest.mark.parametrize("rolling", [False, True])
def test_no_training_or_validation_label_reaches_the_tested_block(rolling) -> None:
    rng = np.random.default_rng(3)
    ts = np.arange(T0, T0 + 60 * DAY, 15 * 60_000)
    he = ts + rng.integers(1, 8, ts.size) * 15 * 60_000  # horizons up to 2 hours
    for f in fold_bounds(
        int(ts[0]), int(ts[-1]), folds=3, rolling=rolling, val_fraction=0.15, embargo_minutes=120
    ):
        code = assign_split(ts, he, f.bounds)
        train, val = code == 0, code == 1
        assert train.any() and val.any()
        tested = (ts >= f.test_start_ms) & (ts < f.test_end_ms)
        assert not (tested & (code >= 0) & (code < 2)).any()  # no test window trains
        assert (he[train] < f.val_start_ms).all() and (he[val] < f.test_start_ms).all()
        assert (ts[val] >= f.val_start_ms + f.embargo_ms).all()
        assert (ts[train] >= f.train_from_ms).all()
        if rolling and f.k > 1:
            assert not ((ts < f.train_from_ms) & (code == 0)).any()


@pytest.mark.parametrize(
    ("kwargs", "flag"),
    [
        ({"folds": 0}, "--folds"),
        ({"val_fraction": 0.0}, "--val-fraction"),
        ({"val_fraction": 1.0}, "--val-fraction"),
        ({"embargo_minutes": -1}, "--embargo-minutes"),
        ({"embargo_minutes": 10 * 24 * 60}, "--embargo-minutes"),  # longer than a validation
    ],
)
def test_impossible_folds_are_one_line_errors_naming_the_flag(kwargs, flag) -> None:
    args = {"folds": 3, "val_fraction": 0.15, **kwargs}
    with pytest.raises(UserError, match=flag):
        fold_bounds(T0, T0 + 100 * DAY, **args)


# ---------------------------------------------------------------------------- pooling


def _period(rng: np.random.Generator, n_bars: int, n_trades: int) -> dict:
    net = rng.normal(0.0, 0.01, n_trades)
    r = net / rng.uniform(0.005, 0.01, n_trades)
    r[rng.random(n_trades) < 0.05] = np.nan  # trades without a risk
    returns = np.where(rng.random(n_bars) < 0.3, rng.normal(0, 0.002, n_bars), 0.0)
    return {"net": net, "r": r, "returns": returns, "held": int(n_bars * 0.3), "bars": n_bars}


def test_segments_joined_give_the_statistics_of_the_concatenated_arrays() -> None:
    rng = np.random.default_rng(5)
    parts = [_period(rng, n, t) for n, t in ((500, 40), (0, 0), (800, 70), (300, 1))]
    direct = trading_stats(
        np.concatenate([p["net"] for p in parts]),
        np.concatenate([p["r"] for p in parts]),
        np.concatenate([p["returns"] for p in parts]),
        held=sum(p["held"] for p in parts),
        symbol_bars=sum(p["bars"] for p in parts),
        bar_ms=60_000,
    )
    segments = [
        Segment.of(p["net"], p["r"], p["returns"], held=p["held"], symbol_bars=p["bars"])
        for p in parts
    ]
    joined = join_all(segments).stats(60_000)
    assert joined.keys() == direct.keys()
    for key, value in direct.items():
        assert joined[key] == pytest.approx(value, rel=1e-9, abs=1e-12), key
    # Associative: joining in another grouping gives the same numbers.
    regrouped = segments[0].join(segments[1].join(segments[2].join(segments[3])))
    for key, value in regrouped.stats(60_000).items():
        assert joined[key] == pytest.approx(value, rel=1e-12, abs=1e-15), key
    # A round trip through the arrays stored in result.npz.
    assert Segment.from_array(segments[2].to_array()) == segments[2]


def test_pooled_random_joins_each_draw_across_folds_then_averages() -> None:
    rng = np.random.default_rng(6)
    draws = [[_period(rng, 200, 15) for _ in range(2)] for _ in range(4)]  # [draw][fold]
    per_fold = [
        np.stack(
            [
                Segment.of(
                    d[k]["net"], d[k]["r"], d[k]["returns"], held=60, symbol_bars=200
                ).to_array()
                for d in draws
            ]
        )
        for k in range(2)
    ]
    pooled = pooled_random(per_fold, 60_000)
    expectancy = [np.concatenate([d[0]["net"], d[1]["net"]]).mean() * 1e4 for d in draws]
    assert pooled["draws"] == 4
    assert pooled["expectancy_bps"] == pytest.approx(np.mean(expectancy), rel=1e-12)
    assert pooled["expectancy_bps_sd"] == pytest.approx(np.std(expectancy, ddof=1), rel=1e-9)


def test_classification_from_a_confusion_matrix() -> None:
    cm = np.array([[50, 5, 3, 2], [4, 10, 1, 0], [3, 1, 8, 1], [1, 0, 2, 4]])
    out = classification(cm)
    assert out["macro_f1"] == M.macro_f1(cm) and out["accuracy"] == M.accuracy(cm)
    assert out["per_class"]["Stop"]["recall"] == pytest.approx(10 / 15)
    assert out["confusion_matrix"] == cm.tolist()


# ---------------------------------------------------------------------------- the command

TRAIN = [
    "--epochs", "1",
    "--batch-size", "64",
    "--accumulation-steps", "1",
    "--checkpoint-every-windows", "10",
    "--seq-len", "16",
    "--set", "model.d_model=16",
    "--set", "model.n_heads=2",
    "--set", "model.n_layers=1",
    "--set", "model.d_ff=32",
    "--precision", "fp32",
    "--progress", "lines",
    "--log-every", "1000000",
    "--threads", "1",
]  # fmt: skip
WF = ["--folds", "3", "--fee-bps", "1", "--slippage-bps", "1", "--random-draws", "20"]
#: Fold 2 trains 92 windows of 64 on the tiny lake; `last` is written every 10.
KILL_WINDOW = 15


def walk_forward(
    lake: Path, out: Path, *extra: str, env: dict | None = None, timeout: float = 120
) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "src.modelling.walk_forward", "--data-dir", str(lake),
         "--out", str(out), *WF, *TRAIN, *extra],
        cwd=out.parent, env={**ENV, **(env or {})}, capture_output=True, text=True,
        timeout=timeout,
    )  # fmt: skip


def numbers(report: dict) -> dict:
    """The report without its wall times."""

    def strip(o):
        if isinstance(o, dict):
            return {k: strip(v) for k, v in o.items() if k != "seconds"}
        if isinstance(o, list):
            return [strip(v) for v in o]
        return o

    return strip(report)


@pytest.fixture(scope="module")
def reference(tmp_path_factory, tiny_lake) -> dict:
    """An uninterrupted 3-fold walk-forward of the tiny lake."""
    out = tmp_path_factory.mktemp("wf_reference") / "out"
    started = time.perf_counter()
    result = walk_forward(tiny_lake, out)
    assert result.returncode == 0, result.stderr
    return {"out": out, "result": result, "seconds": time.perf_counter() - started}


@pytest.mark.slow
def test_a_three_fold_run_writes_every_file_and_pools_the_folds(reference, tiny_lake) -> None:
    out, result = reference["out"], reference["result"]
    path = out / "walk_forward_report.json"
    assert result.stdout.strip().splitlines()[-1] == str(path)
    for name in ("walk_forward.json", "walk_forward_report.json", "walk_forward_equity.png"):
        assert (out / name).is_file(), name
    for k in (1, 2, 3):
        for name in ("result.json", "result.npz", "saimp_best.pth", "saimp_best.json"):
            assert (out / f"fold_{k}" / name).is_file(), (k, name)
    report = json.loads(path.read_text())
    folds, pooled = report["folds"], report["pooled"]
    assert [f["fold"] for f in folds] == [1, 2, 3]
    # Each fold's training used the fold's split: purge, embargo (the lake's 120-minute
    # horizon by default), and was calibrated on its own validation split.
    for f in folds:
        sidecar = json.loads((out / f"fold_{f['fold']}" / "saimp_best.json").read_text())
        b = f["bounds"]
        assert sidecar["split"] == {
            "val_start_ms": b["val_start_ms"],
            "test_start_ms": b["test_start_ms"],
            "embargo_ms": 120 * 60_000,
            "train_start_ms": None,
        }
        assert f["calibration"] is not None and "calibration" in sidecar
        assert f["windows"]["train"] > 0 and f["windows"]["val"] > 0
    # Consecutive test periods.
    for a, b in zip(folds, folds[1:], strict=False):
        assert a["bounds"]["test_end_ms"] == b["bounds"]["test_start_ms"]
    # Pooled classification = the metrics of the summed confusion matrices.
    for kind in ("decision", "argmax"):
        cm = sum(np.array(f["metrics"][kind]["confusion_matrix"]) for f in folds)
        assert pooled["metrics"][kind]["confusion_matrix"] == cm.tolist()
        assert pooled["metrics"][kind]["macro_f1"] == M.macro_f1(cm)
        assert pooled["metrics"][kind]["accuracy"] == M.accuracy(cm)
    assert pooled["windows"] == sum(f["windows"]["test"] for f in folds)
    # Pooled trades are all folds' trades; the stitched equity is the folds' product.
    bt = pooled["backtest"]
    assert bt["n_trades"] == sum(f["backtest"]["n_trades"] for f in folds)
    product = math.prod(1.0 + f["backtest"]["total_return"] for f in folds)
    assert 1.0 + bt["total_return"] == pytest.approx(product, rel=1e-9)
    for name in ("always_long", "perfect"):
        product = math.prod(1.0 + f["backtest"]["baselines"][name]["total_return"] for f in folds)
        assert 1.0 + bt["baselines"][name]["total_return"] == pytest.approx(product, rel=1e-9)
    assert bt["baselines"]["random"]["draws"] == 20
    # Each fold's random draws in result.npz are the backtest's own draws.
    with np.load(out / "fold_2" / "result.npz") as npz:
        draws = [
            Segment.from_array(row).stats(int(npz["bar_ms"])) for row in npz["random_segments"]
        ]
    fold_random = folds[1]["backtest"]["baselines"]["random"]
    assert np.mean([d["expectancy_bps"] for d in draws]) == pytest.approx(
        fold_random["expectancy_bps"], rel=1e-9
    )


@pytest.mark.slow
def test_killed_in_fold_2_the_same_command_continues_to_the_same_report(
    reference, tiny_lake, tmp_path
) -> None:
    out = tmp_path / "out"
    killed = walk_forward(
        tiny_lake, out, env={FAULT_FOLD_ENV: "2", KILL_AT_WINDOW_ENV: str(KILL_WINDOW)}
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert (out / "fold_1" / "result.json").is_file()
    assert not (out / "fold_2" / "result.json").exists()
    assert (out / "fold_2" / "saimp_last.pth").is_file()  # mid-epoch state, window 10
    resumed = walk_forward(tiny_lake, out)
    assert resumed.returncode == 0, resumed.stderr
    assert "[FOLD 1/3] done" in resumed.stdout
    assert f"[RESUME] continuing from {out / 'fold_2' / 'saimp_last.pth'}" in resumed.stdout
    assert resumed.stdout.strip().splitlines()[-1] == str(out / "walk_forward_report.json")
    got = json.loads((out / "walk_forward_report.json").read_text())
    want = json.loads((reference["out"] / "walk_forward_report.json").read_text())
    assert numbers(got) == numbers(want)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("extra", "named"),
    [
        (["--folds", "4"], "--folds: 3 recorded, 4 now"),
        (["--rolling"], "--expanding/--rolling: expanding recorded, rolling now"),
        (["--embargo-minutes", "30"], "--embargo-minutes: 120 recorded, 30 now"),
        (["--lr", "0.01"], "saimp train flags"),
    ],
)
def test_a_rerun_with_other_settings_is_refused(reference, tiny_lake, extra, named) -> None:
    out = reference["out"]
    before = (out / "walk_forward_report.json").stat().st_mtime_ns
    result = subprocess.run(
        [sys.executable, "-m", "src.modelling.walk_forward", "--data-dir", str(tiny_lake),
         "--out", str(out), *WF, *TRAIN, *extra],  # the later flag wins
        cwd=out.parent, env=ENV, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: --out ") and named in lines[0]
    assert (out / "walk_forward_report.json").stat().st_mtime_ns == before


@pytest.mark.slow
def test_a_finished_walk_forward_reruns_without_recomputing(reference, tiny_lake) -> None:
    out = reference["out"]
    files = sorted(out.rglob("*"))
    stamps = {p: p.stat().st_mtime_ns for p in files if p.is_file()}
    started = time.perf_counter()
    result = walk_forward(tiny_lake, out)
    seconds = time.perf_counter() - started
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == str(out / "walk_forward_report.json")
    assert "(0 computed now)" in result.stdout and "[EPOCH]" not in result.stdout
    assert sorted(out.rglob("*")) == files
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps  # nothing rewritten
    assert seconds < reference["seconds"] / 2


def test_flags_the_walk_forward_owns_are_refused(tiny_lake, tmp_path) -> None:
    from src.modelling.walk_forward import main

    for flag in (["--checkpoint", "x.pth"], ["--resume", "auto"], ["--val-start=2024-02-01"]):
        name = flag[0].split("=")[0]
        with pytest.raises(UserError, match=f"^{name}: saimp walk-forward sets it"):
            main(["--data-dir", str(tiny_lake), "--out", str(tmp_path / "o"), *flag])
    with pytest.raises(UserError, match="unrecognized arguments: --no-such-flag"):
        main(["--data-dir", str(tiny_lake), "--out", str(tmp_path / "o"), "--no-such-flag"])
    # Bad judging settings are refused before any fold trains, not after the first.
    for flag, message in ((["--random-seed", "-1"], "--random-seed must be >= 0"),
                          (["--fee-bps", "-1"], "--fee-bps must be in")):  # fmt: skip
        with pytest.raises(UserError, match=message):
            main(["--data-dir", str(tiny_lake), "--out", str(tmp_path / "o"), *flag])
    assert not (tmp_path / "o").exists()


@pytest.mark.slow
def test_a_rolling_fold_trains_on_its_own_block_only(tiny_lake, tmp_path) -> None:
    """Rolling: the fold's training run gets a train_start (its split and normaliser
    start at the block before the tested one)."""
    from src.modelling.walk_forward import main

    out = tmp_path / "rolling"
    assert main(["--data-dir", str(tiny_lake), "--out", str(out), "--rolling", "--folds", "2",
                 "--random-draws", "0", *TRAIN]) == 0  # fmt: skip
    report = json.loads((out / "walk_forward_report.json").read_text())
    second = report["folds"][1]
    sidecar = json.loads((out / "fold_2" / "saimp_best.json").read_text())
    assert sidecar["split"]["train_start_ms"] == second["bounds"]["train_from_ms"]
    first = json.loads((out / "fold_1" / "saimp_best.json").read_text())
    # Fold 2 trains on one block, as fold 1 does: about as many windows, not twice as many.
    assert second["windows"]["train"] < 1.2 * report["folds"][0]["windows"]["train"]
    assert sidecar["normalizer"]["n_rows"] < 1.2 * first["normalizer"]["n_rows"]
    assert report["pooled"]["backtest"]["baselines"]["random"] == {}
