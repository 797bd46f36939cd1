"""The equity curve of a backtest with its drawdown below (matplotlib, written atomically)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from src.modelling.checkpointing.atomic import atomic_write


def plot_equity(timestamp_ms: np.ndarray, equity: np.ndarray, png: Path, title: str = "") -> Path:
    """Equity (top) and drawdown from the running peak (bottom) against time (UTC)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    times = np.asarray(timestamp_ms, np.int64).astype("datetime64[ms]")
    equity = np.asarray(equity, np.float64)
    peak = np.maximum.accumulate(np.maximum(equity, 1.0)) if equity.size else equity
    drawdown = equity / peak - 1.0 if equity.size else equity
    fig, (top, bottom) = plt.subplots(
        2, 1, figsize=(9, 5.5), sharex=True, gridspec_kw={"height_ratios": [3, 1]}
    )
    top.plot(times, equity, lw=1.0, color="tab:blue")
    top.axhline(1.0, color="grey", lw=0.6, ls="--")
    top.set_ylabel("equity (start = 1)")
    top.set_title(title or "backtest")
    bottom.fill_between(times, drawdown * 100, 0, color="tab:red", alpha=0.5, lw=0)
    bottom.set_ylabel("drawdown %")
    fig.autofmt_xdate()
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    atomic_write(Path(png), lambda f: f.write(buffer.getvalue()))
    return Path(png)
