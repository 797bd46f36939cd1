"""The run's PNG, drawn from its JSONL metrics file (the one source of the numbers).

`saimp plot logs/train_run_X.jsonl [out.png]` redraws it (by default next to the JSONL,
with the suffix `.png`).
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

from src.core.constants import CLASS_NAMES
from src.core.errors import ArgumentParser, UserError

PANELS = {
    "loss": ("train_loss", "val_loss"),
    "accuracy": ("train_acc", "val_acc"),
    "f1": ("val_macro_f1", *(f"recall_{name}" for name in CLASS_NAMES)),
}
"""The series each of the three panels draws, left to right, in drawing order."""


def read_epoch_records(jsonl: Path) -> list[dict[str, Any]]:
    """The per-epoch records of a run's JSONL file, in order."""
    records = []
    with open(jsonl, encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                record = json.loads(line)
                if record.get("kind") == "epoch":
                    records.append(record)
    return records


def _number(value: Any, scale: float = 1.0) -> float:
    """A plotted value: null in the JSONL (a NaN in the run) becomes NaN, a gap in the line."""
    return math.nan if value is None else scale * float(value)


def figure_data(records: list[dict[str, Any]]) -> dict[str, list[float]]:
    """The series each panel draws, by name (what a test compares with the JSONL)."""
    data: dict[str, list[float]] = {
        "epoch": [r["epoch"] for r in records],
        "train_loss": [_number(r.get("train_loss")) for r in records],
        "val_loss": [_number(r.get("val_loss")) for r in records],
        "train_acc": [_number(r.get("train_acc"), 100) for r in records],
        "val_acc": [_number(r.get("val_acc"), 100) for r in records],
        "val_macro_f1": [_number(r.get("val_macro_f1")) for r in records],
    }
    for name in CLASS_NAMES:
        data[f"recall_{name}"] = [_number((r.get("val_recall") or {}).get(name)) for r in records]
    return data


def draw_history(records: list[dict[str, Any]], title: str = "") -> Any:
    """The matplotlib Figure of loss, accuracy, and macro-F1 with per-class recall per epoch.

    Its axes draw, in order, the series `PANELS` names (what `plotted_data` reads back).
    """
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
    ax_f1.set(title="Validation macro-F1 and recall", xlabel="epoch", ylim=(-0.02, 1.02))
    for ax in (ax_loss, ax_acc, ax_f1):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        ax.xaxis.get_major_locator().set_params(integer=True)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def plotted_data(fig: Any) -> dict[str, tuple[list[float], list[float]]]:
    """What a figure from `draw_history` actually draws: series name -> (x, y) of its line."""
    out: dict[str, tuple[list[float], list[float]]] = {}
    for ax, names in zip(fig.axes, PANELS.values(), strict=True):
        for line, name in zip(ax.get_lines(), names, strict=True):
            x, y = line.get_data()
            out[name] = ([float(v) for v in x], [float(v) for v in y])
    return out


def plot_history(records: list[dict[str, Any]], png: Path, title: str = "") -> Path:
    """Draw `records` (epoch records, as in the JSONL) into `png`."""
    fig = draw_history(records, title)
    import matplotlib.pyplot as plt

    png = Path(png)
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=100)
    plt.close(fig)
    return png


def main(argv: list[str] | None = None, prog: str = "saimp plot") -> int:
    p = ArgumentParser(
        prog=prog,
        description="Redraw a run's PNG from its JSONL metrics file.",
    )
    p.add_argument("jsonl", type=Path, help="logs/train_run_{stamp}.jsonl")
    p.add_argument("png", type=Path, nargs="?", help="output (default: the JSONL's .png)")
    args = p.parse_args(argv)
    try:
        records = read_epoch_records(args.jsonl)
    except FileNotFoundError:
        raise UserError(f"{args.jsonl}: no such file; pass a run's .jsonl from logs/") from None
    except json.JSONDecodeError as err:
        raise UserError(f"{args.jsonl}: not a JSONL metrics file ({err})") from None
    if not records:
        raise UserError(f"{args.jsonl}: no epoch records yet; nothing to plot")
    logging.getLogger(__name__).info(
        str(plot_history(records, args.png or args.jsonl.with_suffix(".png")))
    )
    return 0


if __name__ == "__main__":
    from src.cli import run_module

    run_module(__spec__.name)  # as the module, so its log lines are under `src`
