"""The pooled out-of-sample report: `{out}/walk_forward_report.json`, the stitched
equity curve `{out}/walk_forward_equity.png`, and the console tables.

`pooled_report` is pure: from the folds' summaries and arrays (`fold_run.load_result`)
to the report's numbers and the stitched curve. The JSON holds `settings`, `folds` (one
entry per fold: bounds, window counts, metrics, backtest statistics) and `pooled`
(`pooled.py`'s definitions).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from src.modelling.checkpointing.atomic import atomic_save_json
from src.modelling.walkforward.pooled import classification, pooled_random, trading_stats

REPORT_NAME = "walk_forward_report.json"
PLOT_NAME = "walk_forward_equity.png"


def _stats(name: str, arrays: list[dict[str, np.ndarray]], bar_ms: int) -> dict[str, Any]:
    return trading_stats(
        np.concatenate([a[f"{name}_net"] for a in arrays]),
        np.concatenate([a[f"{name}_r"] for a in arrays]),
        np.concatenate([a[f"{name}_returns"] for a in arrays]),
        held=int(sum(int(a[f"{name}_held"]) for a in arrays)),
        symbol_bars=int(sum(int(a["symbol_bars"]) for a in arrays)),
        bar_ms=bar_ms,
    )


def pooled_report(
    settings: dict[str, Any],
    summaries: list[dict[str, Any]],
    arrays: list[dict[str, np.ndarray]],
) -> tuple[dict[str, Any], np.ndarray, np.ndarray]:
    """(report, timestamps, equity): folds in time order, pooled as `pooled.py` says;
    the equity is the product of the folds' curves (their bar returns compounded)."""
    bar_ms = int(arrays[0]["bar_ms"])
    names = list(summaries[0]["metrics"]["decision"]["per_class"])
    metrics = {
        kind: classification(sum(a[f"confusion_{kind}"] for a in arrays), names)
        for kind in ("decision", "argmax")
    }
    backtest = _stats("model", arrays, bar_ms)
    backtest["baselines"] = {
        "random": pooled_random([a["random_segments"] for a in arrays], bar_ms),
        "always_long": _stats("always_long", arrays, bar_ms),
        "perfect": _stats("perfect", arrays, bar_ms),
    }
    times = np.concatenate([a["timestamp_ms"] for a in arrays])
    equity = np.cumprod(1.0 + np.concatenate([a["model_returns"] for a in arrays]))
    pooled = {
        "test_start": summaries[0]["bounds"]["test_start"],
        "test_end": summaries[-1]["bounds"]["test_end"],
        "windows": sum(s["windows"]["test"] for s in summaries),
        "bars": sum(s["bars"] for s in summaries),
        "metrics": metrics,
        "backtest": backtest,
    }
    report = {"settings": settings, "folds": summaries, "pooled": pooled, "png": PLOT_NAME}
    return report, times, equity


def write_report(out: Path, report: dict[str, Any], times: np.ndarray, equity: np.ndarray) -> Path:
    """The PNG, then the JSON (atomically, last: its presence means the report is whole)."""
    from src.modelling.trading.equity_plot import plot_equity

    folds = len(report["folds"])
    title = f"walk-forward, {folds} folds stitched ({report['settings']['scheme']})"
    plot_equity(times, equity, Path(out) / PLOT_NAME, title=title)
    path = Path(out) / REPORT_NAME
    atomic_save_json(report, path)
    return path


def _cell(value: Any, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, int):
        return f"{value:,}"
    return f"{value:.{digits}f}"


COLUMNS = (
    ("macro-F1", lambda r: r["metrics"]["decision"]["macro_f1"]),
    ("acc", lambda r: r["metrics"]["decision"]["accuracy"]),
    ("trades", lambda r: r["backtest"]["n_trades"]),
    ("hit", lambda r: r["backtest"]["hit_rate"]),
    ("exp bps", lambda r: r["backtest"]["expectancy_bps"]),
    ("mean R", lambda r: r["backtest"]["mean_r"]),
    ("PF", lambda r: r["backtest"]["profit_factor"]),
    ("return", lambda r: r["backtest"]["total_return"]),
    ("Sharpe", lambda r: r["backtest"]["sharpe"]),
    ("max DD", lambda r: r["backtest"]["max_drawdown"]),
    ("exposure", lambda r: r["backtest"]["exposure"]),
)


def format_table(report: dict[str, Any]) -> str:
    """One row per fold and the pooled row: test period, windows, decision metrics and
    the backtest's statistics; then the pooled model beside the pooled baselines."""
    from src.modelling.trading.backtest_run import format_table as backtest_table

    head = f"{'fold':<8}{'test period':<25}{'train':>9}{'val':>8}{'test':>8}" + "".join(
        f"{name:>10}" for name, _ in COLUMNS
    )
    lines = [head, "-" * len(head)]
    for s in report["folds"]:
        period = f"{s['bounds']['test_start'][:10]} - {s['bounds']['test_end'][:10]}"
        w = s["windows"]
        lines.append(
            f"{s['fold']:<8}{period:<25}{w['train']:>9,}{w['val']:>8,}{w['test']:>8,}"
            + "".join(f"{_cell(get(s)):>10}" for _, get in COLUMNS)
        )
    p = report["pooled"]
    period = f"{p['test_start'][:10]} - {p['test_end'][:10]}"
    lines.append("-" * len(head))
    lines.append(
        f"{'pooled':<8}{period:<25}{'':>9}{'':>8}{p['windows']:>8,}"
        + "".join(f"{_cell(get(p)):>10}" for _, get in COLUMNS)
    )
    lines += ["", "pooled out-of-sample backtest beside the baselines (pooled the same way):"]
    lines.append(backtest_table(p["backtest"]))
    return "\n".join(lines)
