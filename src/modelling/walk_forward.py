"""`saimp walk-forward`: train on the past, judge on the next unseen period, K times,
and pool the K out-of-sample periods into one report.

The lake's time range is cut into K + 1 equal blocks; fold k trains on the blocks
before block k (all of them with `--expanding`, the last one with `--rolling`),
validates on the last `--val-fraction` of that range, with the purge and an embargo at
both boundaries, then is judged on block k: classification metrics of its decisions
and a cost-aware backtest (see `src/modelling/walkforward/`; Lopez de Prado, AFML
ch. 7 and 12). Every other flag is a `saimp train` flag and applies to each fold's
training. Killed at any point, the same command continues: finished folds are kept,
the fold in progress resumes from its `last` checkpoint. The report's JSON path is the
last line printed.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from src.core.errors import ArgumentParser

log = logging.getLogger(__name__)

DEFAULT_OUT = Path("runs/walk_forward")


def build_parser(prog: str = "saimp walk-forward") -> argparse.ArgumentParser:
    from src.config import Config
    from src.modelling.trading.baselines import DEFAULT_DRAWS

    p = ArgumentParser(
        prog=prog,
        allow_abbrev=False,  # the rest are train flags: never guess one of ours from them
        description=__doc__.split("\n\n")[0].replace("\n", " "),
        epilog="Every other flag is a saimp train flag (saimp train --help), applied to each "
        "fold's training; the walk-forward sets --checkpoint, --logs-dir, --runs-dir, "
        "--val-start, --test-start, --train-start and --resume itself. The JSON report's "
        "path is printed last.",
    )
    p.add_argument(
        "--data-dir",
        type=Path,
        default=Config().paths.data_dir,
        help="processed lake (default: %(default)s)",
    )
    p.add_argument("--folds", type=int, default=3, help="K: tested blocks (default: 3)")
    scheme = p.add_mutually_exclusive_group()
    scheme.add_argument(
        "--expanding",
        dest="scheme",
        action="store_const",
        const="expanding",
        help="train on every block before the tested one (default)",
    )
    scheme.add_argument(
        "--rolling",
        dest="scheme",
        action="store_const",
        const="rolling",
        help="train on the one block before the tested one",
    )
    p.set_defaults(scheme="expanding")
    p.add_argument(
        "--out",
        type=Path,
        default=DEFAULT_OUT,
        help="folder of the folds and the report (default: %(default)s)",
    )
    p.add_argument(
        "--val-fraction",
        type=float,
        default=0.15,
        help="validation share of each fold's training range (default: 0.15)",
    )
    p.add_argument(
        "--embargo-minutes",
        type=int,
        help="embargo after each split boundary (default: the lake's label horizon)",
    )
    p.add_argument("--fee-bps", type=float, default=0.0, help="fee per side, basis points")
    p.add_argument(
        "--slippage-bps", type=float, default=0.0, help="slippage per side, basis points"
    )
    p.add_argument(
        "--short-stops", action="store_true", help="open a short on Stop (default: stay flat)"
    )
    p.add_argument(
        "--random-draws",
        type=int,
        default=DEFAULT_DRAWS,
        help="draws of the random-entry baseline (default: %(default)s)",
    )
    p.add_argument(
        "--random-seed",
        type=int,
        default=0,
        help="seed of the random-entry draws (--seed is training's)",
    )
    return p


def main(argv: list[str] | None = None, prog: str = "saimp walk-forward") -> int:
    """Parse, set up logging, threads and the process group (once, for every fold),
    then run the folds and the report (`walkforward.runner`)."""
    from src.modelling.training.cli import build_parser as train_parser
    from src.modelling.training.cli import config_from_args
    from src.modelling.training.launch import launched
    from src.modelling.training.signals import RunInterrupted
    from src.modelling.walkforward.fold_run import refuse_owned_flags
    from src.modelling.walkforward.runner import make_plan, run_plan

    args, train_args = build_parser(prog).parse_known_args(argv)
    refuse_owned_flags(train_args)
    # The train flags, checked once before any work (an unknown flag is an error here).
    base = config_from_args(
        train_parser(prog).parse_args([*train_args, "--data-dir", str(args.data_dir)])
    )
    try:
        with launched(base.train.threads) as run:
            plan = make_plan(args, train_args, base)
            path = run_plan(
                plan, run.world, run.device, setup=[run.threads], governor=run.governor,
                prog=prog,
            )  # fmt: skip
            if path is not None:
                log.info(str(path))  # the last line: the pooled report
        return 0
    except RunInterrupted as stop:
        return stop.exit_code


if __name__ == "__main__":
    from src.cli import run_module

    run_module(__spec__.name)  # as the module, so its log lines are under `src`
