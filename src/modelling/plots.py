"""The run's PNG, drawn from its JSONL metrics file (the one source of the numbers)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from src.core.constants import CLASS_NAMES


def read_epoch_records(jsonl: Path) -> list[dict[str, Any]]:
    """The per-epoch records of a run's JSONL file, in order."""
    records = []
    with open(jsonl) as fh:
        for line in fh:
            if line.strip():
                record = json.loads(line)
                if record.get("kind") == "epoch":
                    records.append(record)
    return records


def figure_data(records: list[dict[str, Any]]) -> dict[str, list[float]]:
    """The series each panel draws, by name (what a test compares with the JSONL)."""
    data: dict[str, list[float]] = {
        "epoch": [r["epoch"] for r in records],
        "train_loss": [r["train_loss"] for r in records],
        "val_loss": [r["val_loss"] for r in records],
        "train_acc": [100 * r["train_acc"] for r in records],
        "val_acc": [100 * r["val_acc"] for r in records],
        "val_macro_f1": [r["val_macro_f1"] for r in records],
    }
    for name in CLASS_NAMES:
        data[f"recall_{name}"] = [r["val_recall"][name] for r in records]
    return data


def plot_history(records: list[dict[str, Any]], png: Path, title: str = "") -> Path:
    """Loss, accuracy, and macro-F1 with per-class recall, train and validation, per epoch."""
    import matplotlib

    matplotlib.use("Agg")  # files only: works without a display
    import matplotlib.pyplot as plt

    data = figure_data(records)
    epochs = data["epoch"]
    fig, (ax_loss, ax_acc, ax_f1) = plt.subplots(1, 3, figsize=(15, 4.2))
    ax_loss.plot(epochs, data["train_loss"], "o-", label="train")
    ax_loss.plot(epochs, data["val_loss"], "o-", label="validation")
    ax_loss.set(title="Loss (class-weighted)", xlabel="epoch", ylabel="loss")
    ax_acc.plot(epochs, data["train_acc"], "o-", label="train")
    ax_acc.plot(epochs, data["val_acc"], "o-", label="validation")
    ax_acc.set(title="Accuracy", xlabel="epoch", ylabel="%")
    ax_f1.plot(epochs, data["val_macro_f1"], "k-o", linewidth=2, label="macro-F1")
    for name in CLASS_NAMES:
        ax_f1.plot(epochs, data[f"recall_{name}"], "--", label=f"recall {name}")
    ax_f1.set(title="Validation macro-F1 and recall", xlabel="epoch", ylim=(0, 1))
    for ax in (ax_loss, ax_acc, ax_f1):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        ax.xaxis.get_major_locator().set_params(integer=True)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=100)
    plt.close(fig)
    return png
