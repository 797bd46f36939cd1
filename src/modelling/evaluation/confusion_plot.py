"""The confusion-matrix heatmap of an evaluation report (matplotlib, written atomically)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from src.modelling.checkpointing.atomic import atomic_write


def plot_confusion(report: dict[str, Any], png: Path, title: str = "") -> Path:
    """Heatmap of the confusion matrix: colour = row-normalised %, text = count and %."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = report["class_names"]
    cm = np.asarray(report["confusion_matrix"], dtype=np.float64)
    rows = cm.sum(axis=1, keepdims=True)
    pct = np.divide(100 * cm, rows, out=np.zeros_like(cm), where=rows > 0)
    fig, ax = plt.subplots(figsize=(6.6, 5.6))
    im = ax.imshow(pct, cmap="Blues", vmin=0, vmax=100)
    for i in range(len(names)):
        for j in range(len(names)):
            ax.text(
                j,
                i,
                f"{int(cm[i, j]):,}\n{pct[i, j]:.1f}%",
                ha="center",
                va="center",
                fontsize=9,
                color="white" if pct[i, j] > 55 else "black",
            )
    ax.set_xticks(range(len(names)), names)
    ax.set_yticks(
        range(len(names)), [f"{n}\n(n={int(r):,})" for n, r in zip(names, rows[:, 0], strict=True)]
    )
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    rnd = report["baselines"]["random"]
    ax.set_title(
        title
        or f"{report.get('split', '')}: macro-F1 {report['macro_f1']:.3f} (random "
        f"{rnd['macro_f1']:.3f}), balanced acc {report['balanced_accuracy']:.3f}",
        fontsize=10,
    )
    fig.colorbar(im, ax=ax, label="% of the true class (row)")
    fig.tight_layout()
    atomic_write(png, lambda fh: fig.savefig(fh, format="png", dpi=110))
    plt.close(fig)
    return png
