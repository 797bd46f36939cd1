"""`saimp`: one command for the whole lifecycle, one subcommand per step.

    saimp synthetic | prepare | train | evaluate | predict | calibrate | backtest |
          walk-forward | export | tune | plot
          [flags]   (saimp CMD --help)

Each subcommand is the `main()` of its module (`python -m src.data.prepare` and so on
work the same); they share flag names: `--data-dir` (processed lake), `--raw-dir` (raw
candles), `--checkpoint`, `--out`. Modules are imported only when their subcommand runs,
so `saimp --help` answers at once.
"""

from __future__ import annotations

import importlib
import sys

from src.core.errors import UserError, run_cli

#: subcommand -> (module whose `main(argv, prog)` runs it, one line of help)
COMMANDS: dict[str, tuple[str, str]] = {
    "synthetic": ("src.data.synthetic", "write seeded synthetic candles (--raw-dir)"),
    "prepare": ("src.data.prepare", "raw candles (--raw-dir) -> features and labels (--data-dir)"),
    "train": ("src.modelling.train", "train SAIMP on the lake; prints the best checkpoint"),
    "evaluate": ("src.modelling.evaluate", "report a checkpoint on a split, beside baselines"),
    "predict": ("src.modelling.predict", "probabilities and decisions for new candles or a lake"),
    "calibrate": ("src.modelling.calibrate", "fit a checkpoint's calibration and decision rule"),
    "backtest": (
        "src.modelling.backtest",
        "trade a checkpoint's decisions after costs, beside baselines",
    ),
    "walk-forward": (
        "src.modelling.walk_forward",
        "train on the past, judge the next period, K times; the pooled report",
    ),
    "export": ("src.modelling.export", "the model as ONNX with its sidecar, checked"),
    "tune": ("src.modelling.tune", "hyperparameter search (Optuna), resumable and parallel"),
    "plot": ("src.modelling.observability.plots", "redraw a run's PNG from its JSONL"),
}


def usage() -> str:
    width = max(map(len, COMMANDS))
    lines = [
        "usage: saimp COMMAND [flags]    (saimp COMMAND --help for its flags)",
        "",
        "Train and judge SAIMP, a 4-class market-signal classifier, from market candles.",
        "",
        "commands:",
        *(f"  {name:<{width}}  {text}" for name, (_, text) in COMMANDS.items()),
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        raise UserError(
            f"unknown command {name!r}; choose one of {', '.join(COMMANDS)} (see saimp --help)"
        )
    module = importlib.import_module(COMMANDS[name][0])
    return module.main(rest, prog=f"saimp {name}")


def run() -> None:
    """The console script's entry point."""
    sys.exit(run_cli(main))


def run_module(name: str) -> None:
    """`python -m NAME`: run that module's `main()` imported under its own name.

    Run as `__main__`, a module's `logging.getLogger(__name__)` would be `__main__`,
    outside the `src` logger that the console and the run log listen to.
    """
    sys.exit(run_cli(importlib.import_module(name).main))


if __name__ == "__main__":
    run()
