"""`saimp backtest`: a checkpoint's decisions on a split, traded at the labels' own
barriers after costs, beside its own decisions shifted in time, always-long and the
perfect ceiling.

    saimp backtest --checkpoint data/saimp_best.pth [--data-dir LAKE] [--split test]
        [--fee-bps 4] [--slippage-bps 2] [--short-stops] [--out DIR]

Writes {stem}_{split}_backtest.json and .png (beside the checkpoint, or in --out) and
prints the JSON's path last. With several --checkpoint, the best by Sharpe ratio is
reported with its deflated Sharpe ratio. The rules: `src.modelling.trading.engine`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from src.core import constants as C
from src.core.errors import ArgumentParser, UserError
from src.data.split import parse_date_ms
from src.modelling.device import resolve_device
from src.modelling.trading.backtest_run import SPLITS, backtest_checkpoints
from src.modelling.trading.baselines import DEFAULT_DRAWS
from src.modelling.trading.engine import Costs


def build_parser(prog: str = "saimp backtest") -> argparse.ArgumentParser:
    p = ArgumentParser(
        prog=prog,
        description="Trade a checkpoint's decisions on a split at the labels' own barriers "
        "(Long: take profit U1, SuperLong: U2, stop at the lower barrier, else the horizon's "
        "close), after fees and slippage, one position per symbol; beside its decisions "
        "shifted in time, always-long and the labels as decisions.",
    )
    p.add_argument(
        "--checkpoint",
        type=Path,
        action="append",
        help=f"best checkpoint (default {C.DEFAULT_CHECKPOINT}); repeat to compare several: "
        "the best by Sharpe ratio is reported with its deflated Sharpe ratio",
    )
    p.add_argument(
        "--data-dir", type=Path, help="processed lake (default: the one the checkpoint trained on)"
    )
    p.add_argument("--split", default="test", choices=SPLITS)
    p.add_argument(
        "--from",
        dest="start",
        help="ISO date: backtest [from, to) instead of a split (new data, e.g. after the lake "
        "the checkpoint trained on)",
    )
    p.add_argument("--to", dest="end", help="ISO date, exclusive (with --from: default the end)")
    p.add_argument("--fee-bps", type=float, default=0.0, help="fee per side, basis points")
    p.add_argument(
        "--slippage-bps", type=float, default=0.0, help="slippage per side, basis points"
    )
    p.add_argument(
        "--short-stops", action="store_true", help="open a short on Stop (default: stay flat)"
    )
    p.add_argument("--out", type=Path, help="report directory (default: beside the checkpoint)")
    p.add_argument(
        "--random-draws",
        type=int,
        default=DEFAULT_DRAWS,
        help="random shifts of the model's decisions (the `random` baseline)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the random shifts")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--batch-size", type=int, default=512)
    return p


def main(argv: list[str] | None = None, prog: str = "saimp backtest") -> int:
    args = build_parser(prog).parse_args(argv)
    if args.seed < 0:  # numpy's generators take no negative seed
        raise UserError(f"--seed must be >= 0, got {args.seed}")
    try:
        costs = Costs(fee_bps=args.fee_bps, slippage_bps=args.slippage_bps)
    except ValueError as err:
        raise UserError(str(err)) from None
    period = None
    if args.start or args.end:
        period = (
            parse_date_ms(args.start, "--from") if args.start else None,
            parse_date_ms(args.end, "--to") if args.end else None,
        )
        if None not in period and period[1] <= period[0]:
            raise UserError(f"--to {args.end} is not after --from {args.start}")
    backtest_checkpoints(
        args.checkpoint or [C.DEFAULT_CHECKPOINT],
        data_dir=args.data_dir,
        split=args.split if period is None else "period",
        period=period,
        costs=costs,
        short_stops=args.short_stops,
        out_dir=args.out,
        draws=args.random_draws,
        seed=args.seed,
        device=resolve_device(args.device),
        batch_size=args.batch_size,
    )
    return 0


if __name__ == "__main__":
    from src.cli import run_module

    run_module(__spec__.name)  # as the module, so its log lines are under `src`
