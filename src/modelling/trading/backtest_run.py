"""`saimp backtest`'s work: a checkpoint's decisions on a split, traded at the labels'
own barriers, beside the baselines; the report as JSON, a console table and a PNG.

Decisions come from `saimp predict`'s code (calibration and decision rule included),
so the backtest trades exactly what `predict` would have said. Bars of the split that
end no window (a symbol's first seq_len - 1 bars, bars after a gap) stay flat.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from src.core.errors import UserError
from src.core.paths import writable_dir
from src.data.raw_checks import iso_ms
from src.modelling.checkpointing.atomic import atomic_save_json
from src.modelling.checkpointing.best import sidecar_path
from src.modelling.evaluation.inference import split_bounds_of
from src.modelling.evaluation.report_files import report_paths
from src.modelling.trading.baselines import DEFAULT_DRAWS, baselines, run
from src.modelling.trading.deflated_sharpe import deflated_sharpe
from src.modelling.trading.engine import NEUTRO, Costs, SymbolBars
from src.modelling.trading.equity_plot import plot_equity
from src.modelling.trading.lake_bars import symbol_bars
from src.modelling.trading.metrics import MS_PER_YEAR

logger = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")


@dataclass
class BacktestResult:
    report: dict[str, Any]
    json_path: Path
    png_path: Path


def split_range(
    sidecar: dict[str, Any], checkpoint: Path, split: str
) -> tuple[int | None, int | None]:
    """[from, to) epoch ms of a split, from the checkpoint's own split bounds: after the
    training start and the embargo, as the split's windows (`src.data.split`)."""
    b = split_bounds_of(sidecar, sidecar_path(checkpoint))
    return {
        "train": (b.train_start_ms, b.val_start_ms),
        "val": (b.val_start_ms + b.embargo_ms, b.test_start_ms),
        "test": (b.test_start_ms + b.embargo_ms, None),
    }[split]


def align_decisions(bars: SymbolBars, ts_ms: np.ndarray, decisions: np.ndarray) -> np.ndarray:
    """Decisions per bar (int8 (n,)): the window's decision at its last bar, Neutro at
    bars that end no window."""
    out = np.full(len(bars), NEUTRO, np.int8)
    at = np.searchsorted(bars.timestamp, ts_ms)
    ok = (at < len(bars)) & (bars.timestamp[np.minimum(at, len(bars) - 1)] == ts_ms)
    if not ok.all():
        raise RuntimeError(f"{bars.symbol}: {int((~ok).sum())} predictions at no lake bar")
    out[at] = decisions
    return out


def decisions_for(
    predictor: Any, index: Any, bars: list[SymbolBars], from_ms: int | None, to_ms: int | None
) -> list[np.ndarray]:
    """The checkpoint's decisions on every bar of `bars` (`saimp predict`'s code)."""
    from src.modelling.prediction.from_lake import predict_lake

    names = list(predictor.class_names)
    got: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {}
    for item in predict_lake(predictor, index, from_ms=from_ms, to_ms=to_ms):
        table = item.table
        ts = table.column("timestamp").cast("int64").to_numpy()
        idx = np.array([names.index(d) for d in table.column("decision").to_pylist()], np.int8)
        got.setdefault(item.symbol, []).append((ts, idx))
    out = []
    for b in bars:
        parts = got.get(b.symbol, [])
        ts = np.concatenate([p[0] for p in parts]) if parts else np.zeros(0, np.int64)
        dec = np.concatenate([p[1] for p in parts]) if parts else np.zeros(0, np.int8)
        out.append(align_decisions(b, ts, dec))
    return out


def multiple_testing(
    n_trials: int, returns: np.ndarray, sharpe_variance_per_bar: float, source: str
) -> dict[str, Any]:
    """How many configurations the model was chosen from, and its deflated Sharpe."""
    return {
        **deflated_sharpe(returns, n_trials=n_trials, sharpe_variance=sharpe_variance_per_bar),
        "sharpe_variance_from": source,
    }


def backtest(
    bars: list[SymbolBars],
    decisions: list[np.ndarray],
    *,
    costs: Costs,
    short_stops: bool,
    bar_ms: int,
    draws: int = DEFAULT_DRAWS,
    seed: int = 0,
) -> dict[str, Any]:
    """The report's numbers (no files): the model's statistics, `per_signal`,
    `baselines`, and `equity` (arrays) for the plot."""
    report = run(bars, decisions, costs=costs, short_stops=short_stops, bar_ms=bar_ms)
    report["baselines"] = baselines(
        bars, decisions, costs=costs, short_stops=short_stops, bar_ms=bar_ms, draws=draws, seed=seed
    )
    return report


def backtest_split(
    predictor: Any,
    index: Any,
    from_ms: int | None,
    to_ms: int | None,
    *,
    costs: Costs,
    short_stops: bool,
    draws: int = DEFAULT_DRAWS,
    seed: int = 0,
) -> dict[str, Any]:
    """`backtest` of a predictor's decisions on the lake's bars in [from_ms, to_ms)
    (equity arrays included); `UserError` when the lake has no bars there."""
    bars = list(symbol_bars(index, from_ms=from_ms, to_ms=to_ms))
    if not bars:
        lo = "the start" if from_ms is None else iso_ms(from_ms)
        hi = "the end" if to_ms is None else iso_ms(to_ms)
        raise UserError(
            f"--data-dir {index.data_dir}: no bars from {lo} to {hi} (the lake spans "
            f"{iso_ms(index.t_min_ms)} to {iso_ms(index.t_max_ms)}); choose --split, or "
            "--from/--to inside the lake"
        )
    decisions = decisions_for(predictor, index, bars, from_ms, to_ms)
    return backtest(
        bars, decisions, costs=costs, short_stops=short_stops, bar_ms=index.bar_ms,
        draws=draws, seed=seed,
    )  # fmt: skip


def bar_returns(equity: np.ndarray) -> np.ndarray:
    prev = np.concatenate(([1.0], equity[:-1]))
    return equity / prev - 1.0


def format_table(report: dict[str, Any]) -> str:
    """The model beside the baselines, one row each."""
    cols = ("n_trades", "hit_rate", "expectancy_bps", "mean_r", "profit_factor",
            "total_return", "sharpe", "max_drawdown", "exposure")  # fmt: skip

    def cell(v: Any) -> str:
        if v is None:
            return "-"
        if isinstance(v, int) or (isinstance(v, float) and v.is_integer() and abs(v) > 100):
            return f"{v:,.0f}"
        return f"{v:.3f}" if abs(v) < 1000 else f"{v:,.0f}"

    rows = [("model", report)] + list(report["baselines"].items())
    head = f"{'':<12}" + "".join(f"{c:>15}" for c in cols)
    lines = [head]
    for name, r in rows:
        lines.append(f"{name:<12}" + "".join(f"{cell(r.get(c)):>15}" for c in cols))
    rnd = report["baselines"].get("random", {})
    if rnd.get("expectancy_bps_sd") is not None:
        lines.append(
            f"random = the model's decisions shifted in time: expectancy "
            f"{rnd['expectancy_bps']:.2f} ± {rnd['expectancy_bps_sd']:.2f} bps (sd over "
            f"{rnd['draws']} shifts)"
        )
    return "\n".join(lines)


def backtest_checkpoints(
    checkpoints: list[Path],
    *,
    data_dir: Path | None = None,
    split: str = "test",
    period: tuple[int | None, int | None] | None = None,
    costs: Costs | None = None,
    short_stops: bool = False,
    out_dir: Path | None = None,
    draws: int = DEFAULT_DRAWS,
    seed: int = 0,
    device: str = "cpu",
    batch_size: int = 512,
    log: Callable[[str], None] = logger.info,
) -> BacktestResult:
    """Backtest each checkpoint on its `split` (or on `period`, [from, to) epoch ms, for
    data the checkpoint never saw); report the best by Sharpe ratio (the
    only one when a single checkpoint is given), with `multiple_testing` when it was
    chosen among several (or among a tuning study's trials, from its sidecar)."""
    from src.modelling.prediction.from_lake import open_lake
    from src.modelling.prediction.predictor import Predictor

    costs = costs or Costs()
    if period is None and split not in SPLITS:
        raise UserError(f"--split: unknown split {split!r}; choose one of {', '.join(SPLITS)}")
    if draws < 0:
        raise UserError(f"--random-draws must be >= 0, got {draws}")
    started = time.perf_counter()
    runs = []
    for checkpoint in map(Path, checkpoints):
        predictor = Predictor.load(checkpoint, device=device, batch_size=batch_size)
        sidecar = predictor.sidecar
        lake = data_dir or (sidecar.get("config") or {}).get("paths", {}).get("data_dir")
        if lake is None:
            raise UserError("--data-dir: the sidecar does not name the training lake; pass it")
        index = open_lake(predictor, Path(lake), "backtest")
        from_ms, to_ms = period or split_range(sidecar, checkpoint, split)
        report = backtest_split(
            predictor, index, from_ms, to_ms, costs=costs, short_stops=short_stops,
            draws=draws, seed=seed,
        )  # fmt: skip
        runs.append((checkpoint, sidecar, Path(lake), index.bar_ms, report))

    def key(run: tuple) -> float:
        sharpe = run[4]["sharpe"]
        return -math.inf if sharpe is None else sharpe

    checkpoint, sidecar, lake, bar_ms, report = max(runs, key=key)
    json_path, png_path = report_paths(checkpoint, split, out_dir, kind="backtest")
    writable_dir(json_path.parent, "--out" if out_dir else "--checkpoint")
    equity = report.pop("equity")
    returns = bar_returns(equity["equity"])
    per_year = MS_PER_YEAR / bar_ms
    tuned = (sidecar.get("tuning") or {}).get("trials")
    if len(runs) > 1:
        per_bar = [r[4]["sharpe"] / math.sqrt(per_year) for r in runs if r[4]["sharpe"] is not None]
        variance = float(np.var(per_bar, ddof=1)) if len(per_bar) > 1 else 0.0
        report["multiple_testing"] = {
            "configurations": [str(r[0]) for r in runs],
            "sharpe": [r[4]["sharpe"] for r in runs],
            **multiple_testing(
                len(runs), returns, variance, "the compared checkpoints' Sharpe ratios"
            ),
        }
    elif tuned and int(tuned) > 1:
        sd = (report["baselines"].get("random") or {}).get("sharpe_sd") or 0.0
        report["multiple_testing"] = multiple_testing(
            int(tuned), returns, (sd / math.sqrt(per_year)) ** 2,
            "the model's decisions shifted in time (the trials' own Sharpe ratios are unknown)",
        )  # fmt: skip
    report.update(
        checkpoint=str(checkpoint),
        data_dir=str(lake),
        split=split,
        costs={"fee_bps": costs.fee_bps, "slippage_bps": costs.slippage_bps},
        short_stops=short_stops,
        bar_ms=bar_ms,
        start=str(np.datetime64(int(equity["timestamp_ms"][0]), "ms")) + "Z",
        end=str(np.datetime64(int(equity["timestamp_ms"][-1]), "ms")) + "Z",
        png=str(png_path),
    )
    plot_equity(
        equity["timestamp_ms"], equity["equity"], png_path, title=f"{checkpoint} on {split}"
    )
    atomic_save_json(report, json_path)
    log(
        f"[BACKTEST] {checkpoint} on the {split} split of {lake} | fees {costs.fee_bps:g} bps + "
        f"slippage {costs.slippage_bps:g} bps per side | "
        f"{'long and short' if short_stops else 'long only'} | {time.perf_counter() - started:.1f}s"
    )
    log(format_table(report))
    mt = report.get("multiple_testing")
    if mt:
        dsr = mt["deflated_sharpe"]
        log(
            f"chosen among {mt['n_trials']} configurations: deflated Sharpe ratio "
            f"{'n/a' if dsr is None else f'{dsr:.3f}'} (the probability that its true Sharpe "
            f"ratio beats the best of {mt['n_trials']} skill-less ones)"
        )
    log(f"[BACKTEST] equity curve {png_path}")
    log(str(json_path))
    return BacktestResult(report, json_path, png_path)
