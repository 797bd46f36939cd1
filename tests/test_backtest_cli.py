"""`saimp backtest` end to end on a tiny lake: the files and the last line, the decisions
it trades are `saimp predict`'s, the baselines, several checkpoints, and user errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from src.config import Config, DataConfig, ModelConfig, PathsConfig, TrainConfig
from src.core.errors import run_cli
from src.data.dataloader import build_data
from src.data.prepare import prepare_lake
from src.data.synthetic import write_raw
from src.modelling import backtest, predict
from src.modelling.checkpointing.best import save_best
from src.modelling.checkpointing.sidecar import sidecar_for
from src.modelling.training import components

KEYS = ("n_trades", "hit_rate", "expectancy_bps", "mean_r", "profit_factor", "total_return",
        "sharpe", "max_drawdown", "exposure", "turnover")  # fmt: skip


def _checkpoint(root: Path, lake: Path, name: str, seed: int) -> Path:
    cfg = Config(
        paths=PathsConfig(data_dir=lake, checkpoint=root / name / "model.pth"),
        data=DataConfig(seq_len=8, val_fraction=0.2, test_fraction=0.3),
        model=ModelConfig(d_model=8, n_heads=2, n_layers=1, d_ff=16, dropout=0.0),
        train=TrainConfig(batch_size=64, seed=seed),
    )
    data = build_data(cfg)
    torch.manual_seed(seed)
    model = components.build_model(cfg, data.index.num_features)
    with torch.no_grad():  # decisions of every class, not one class everywhere
        model.head[-1].weight.mul_(30.0)
    save_best(model, cfg.paths.checkpoint, {**sidecar_for(cfg, data, model), "epoch": 1})
    return cfg.paths.checkpoint


@pytest.fixture(scope="module")
def market(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("backtest")
    write_raw(root / "raw", n_bars=4000, seed=3, bar_minutes=15, n_symbols=2)
    prepare_lake(root / "raw", root / "lake", row_group_rows=512, log=lambda _: None)
    return {
        "root": root,
        "lake": root / "lake",
        "a": _checkpoint(root, root / "lake", "a", 0),
        "b": _checkpoint(root, root / "lake", "b", 1),
    }


def run(argv: list[str], capsys) -> tuple[int, list[str], str]:
    code = run_cli(backtest.main, argv)
    captured = capsys.readouterr()
    return code, captured.out.splitlines(), captured.err


def test_report_files_and_the_json_path_last(market: dict, tmp_path: Path, capsys) -> None:
    argv = ["--checkpoint", str(market["a"]), "--fee-bps", "4", "--slippage-bps", "2",
            "--out", str(tmp_path), "--random-draws", "20"]  # fmt: skip
    code, out, _ = run(argv, capsys)
    assert code == 0
    json_path = Path(out[-1])
    assert json_path == tmp_path / "model_test_backtest.json"
    report = json.loads(json_path.read_text())
    assert Path(report["png"]).is_file() and Path(report["png"]).stat().st_size > 1000
    for key in KEYS:
        assert key in report
        for name in ("random", "always_long", "perfect"):
            assert key in report["baselines"][name]
    assert report["n_trades"] > 10 and report["costs"] == {"fee_bps": 4.0, "slippage_bps": 2.0}
    assert report["baselines"]["random"]["draws"] == 20
    assert report["baselines"]["random"]["expectancy_bps_sd"] > 0
    assert report["baselines"]["perfect"]["hit_rate"] > 0.9  # the labels are the ceiling
    assert "multiple_testing" not in report
    assert any(line.startswith("model ") for line in out)


def test_it_trades_the_decisions_predict_writes(market: dict, tmp_path: Path, capsys) -> None:
    """Every trade opens on a bar whose decision in `saimp predict`'s output is Long or
    SuperLong, in the test split."""
    report_dir = tmp_path / "bt"
    run(["--checkpoint", str(market["a"]), "--out", str(report_dir), "--random-draws", "0"], capsys)
    report = json.loads((report_dir / "model_test_backtest.json").read_text())
    preds_path = tmp_path / "p.parquet"
    sidecar = json.loads(market["a"].with_suffix(".json").read_text())
    test_start = np.datetime64(int(sidecar["split"]["test_start_ms"]), "ms")
    assert run_cli(predict.main, ["--checkpoint", str(market["a"]), "--data-dir",
                                  str(market["lake"]), "--from", str(test_start) + "Z",
                                  "--out", str(preds_path)]) == 0  # fmt: skip
    capsys.readouterr()
    preds = pq.read_table(preds_path)
    longs = np.isin(np.array(preds.column("decision").to_pylist()), ["Long", "SuperLong"])
    per = report["per_signal"]
    signals = sum(per.get(k, {}).get("signals", 0) for k in ("Long", "SuperLong"))
    assert signals == int(longs.sum()) > 0
    taken = sum(per.get(k, {}).get("n_trades", 0) for k in ("Long", "SuperLong"))
    skipped = sum(per.get(k, {}).get("skipped", 0) for k in ("Long", "SuperLong"))
    assert taken + skipped == signals and taken == report["n_trades"]


def test_several_checkpoints_report_the_best_with_its_deflated_sharpe(
    market: dict, tmp_path: Path, capsys
) -> None:
    argv = ["--checkpoint", str(market["a"]), "--checkpoint", str(market["b"]),
            "--out", str(tmp_path), "--random-draws", "5", "--short-stops"]  # fmt: skip
    code, out, _ = run(argv, capsys)
    assert code == 0
    report = json.loads(Path(out[-1]).read_text())
    mt = report["multiple_testing"]
    assert mt["n_trials"] == 2 and len(mt["sharpe"]) == 2
    assert report["sharpe"] == max(s for s in mt["sharpe"] if s is not None)
    assert 0.0 <= mt["deflated_sharpe"] <= 1.0
    assert any("deflated Sharpe ratio" in line for line in out)
    assert report["short_stops"] is True


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (["--fee-bps", "-1"], "--fee-bps must be in"),
        (["--split", "later"], "invalid choice"),
        (["--random-draws", "-2"], "--random-draws must be >= 0"),
    ],
)
def test_user_errors_are_one_line_and_exit_2(market, tmp_path, capsys, extra, expected):
    code, _, err = run(["--checkpoint", str(market["a"]), "--out", str(tmp_path), *extra], capsys)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0]
    assert not list(tmp_path.iterdir())


def test_a_missing_checkpoint_is_one_line(tmp_path: Path, capsys) -> None:
    code, _, err = run(["--checkpoint", str(tmp_path / "nope.pth")], capsys)
    assert code == 2 and err.count("\n") == 1 and "nope.pth" in err


def test_evaluate_report_has_the_same_backtest(market: dict, tmp_path: Path, capsys) -> None:
    from src.modelling import evaluate

    common = ["--checkpoint", str(market["a"]), "--fee-bps", "3", "--random-draws", "7"]
    code, out, _ = run([*common, "--out", str(tmp_path / "bt")], capsys)
    assert code == 0
    alone = json.loads(Path(out[-1]).read_text())
    assert run_cli(evaluate.main, [*common, "--out", str(tmp_path / "ev")]) == 0
    printed = capsys.readouterr().out.splitlines()
    section = json.loads(Path(printed[-1]).read_text())["backtest"]
    for key in (*KEYS, "per_signal", "baselines"):
        assert section[key] == alone[key], key
    assert any(line.startswith("backtest (saimp backtest's rules") for line in printed)


def test_a_period_instead_of_a_split(market: dict, tmp_path: Path, capsys) -> None:
    """--from/--to backtest any period (data after the checkpoint's lake, say); a period
    with no bars names the lake's span and the flags."""
    argv = ["--checkpoint", str(market["a"]), "--out", str(tmp_path), "--random-draws", "3"]
    code, out, _ = run([*argv, "--from", "2024-01-20", "--to", "2024-02-01"], capsys)
    assert code == 0
    report = json.loads(Path(out[-1]).read_text())
    assert Path(out[-1]).name == "model_period_backtest.json"
    assert report["start"] >= "2024-01-20" and report["end"] < "2024-02-01"
    code, _, err = run([*argv, "--from", "2030-01-01"], capsys)
    assert code == 2 and err.count("\n") == 1 and "the lake spans" in err and "--from" in err
    code, _, err = run([*argv, "--from", "2024-02-01", "--to", "2024-01-01"], capsys)
    assert code == 2 and "is not after --from" in err
