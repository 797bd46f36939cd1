"""The reliability diagram of an evaluation report: before and after calibration
(matplotlib, written atomically).

Top-label reliability (Guo et al. 2017, "On Calibration of Modern Neural Networks",
fig. 1): windows are binned by their largest probability (the confidence, 15 equal-width
bins); each bin's accuracy (how often that class was the true one) is plotted against
its mean confidence. A calibrated model lies on the diagonal; the gap, weighted by the
bin's share of windows, summed, is the ECE. The bins come from
`calibration.reliability_bins`, stored in the report, so the PNG can be redrawn.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from src.modelling.checkpointing.atomic import atomic_write

_STYLE = {"before": ("tab:red", "o"), "after": ("tab:blue", "s")}


def plot_reliability(
    curves: dict[str, dict[str, Any]], png: Path, title: str = "", ece: dict | None = None
) -> Path:
    """Draw `curves` ({label: reliability_bins(...)}; "before" and "after" get fixed
    colours) as a reliability diagram (left) and the windows per confidence bin (right)
    into `png`. `ece`: {label: ECE} shown in the legend. Returns `png`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, hist) = plt.subplots(
        1, 2, figsize=(10.5, 4.6), gridspec_kw={"width_ratios": (1.15, 1)}
    )
    ax.plot([0, 1], [0, 1], color="grey", lw=1, ls="--", label="perfectly calibrated")
    for k, (label, bins) in enumerate(curves.items()):
        color, marker = _STYLE.get(label, (f"C{k + 2}", "^"))
        count = np.asarray(bins["count"], np.float64)
        conf = np.asarray(bins["confidence"], np.float64)
        acc = np.asarray(bins["accuracy"], np.float64)
        edges = np.asarray(bins["edges"], np.float64)
        used = count > 0
        name = label if not ece or label not in ece else f"{label} (ECE {ece[label]:.3f})"
        ax.plot(conf[used], acc[used], marker=marker, color=color, lw=1.5, ms=5, label=name)
        width = np.diff(edges)
        shift = (k - (len(curves) - 1) / 2) * width / (len(curves) + 1)
        hist.bar(
            (edges[:-1] + edges[1:]) / 2 + shift,
            count,
            width=width / (len(curves) + 1),
            color=color,
            alpha=0.8,
            label=label,
        )
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_aspect("equal")
    ax.set_xlabel("confidence (largest probability), bin mean")
    ax.set_ylabel("accuracy of that class in the bin")
    ax.legend(loc="upper left", fontsize=8)
    ax.grid(alpha=0.3)
    hist.set_yscale("log")
    hist.set_xlim(0, 1)
    hist.set_xlabel("confidence")
    hist.set_ylabel("windows per bin")
    hist.legend(fontsize=8)
    hist.grid(alpha=0.3, axis="y")
    fig.suptitle(title or "reliability (top label, 15 bins)", fontsize=10)
    fig.tight_layout()
    atomic_write(png, lambda fh: fig.savefig(fh, format="png", dpi=110))
    plt.close(fig)
    return png
