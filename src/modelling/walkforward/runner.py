"""The walk-forward's loop: plan the folds from the lake, then for each fold not done
train it (every rank), judge it and write its result (rank 0, the others waiting at a
barrier), and finally pool the folds into the report (rank 0).

Every rank runs the same loop and sees the same files: a fold's result is written by
rank 0 before the barrier that ends the fold, so at the next fold's start every rank
agrees on what is done. The barrier is a gloo group of its own with a long timeout:
judging a fold (predictions, backtest, random draws) may outlast the training group's
timeout, and a gloo barrier holds no GPU.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from src.config import Config, LabelConfig
from src.core.errors import UserError
from src.core.paths import writable_dir
from src.data.split import iso
from src.modelling.trading.engine import Costs
from src.modelling.walkforward.fold_run import FoldPaths, judge_fold, load_result, train_fold
from src.modelling.walkforward.folds import Fold, fold_bounds
from src.modelling.walkforward.report import REPORT_NAME, format_table, pooled_report, write_report
from src.modelling.walkforward.settings import check_settings, record_settings

log = logging.getLogger(__name__)

#: How long ranks other than 0 wait for rank 0 to judge a fold.
WAIT_TIMEOUT = dt.timedelta(hours=24)


@dataclass
class Plan:
    out: Path
    data_dir: Path
    folds: list[Fold]
    train_args: list[str]
    settings: dict[str, Any]
    costs: Costs
    short_stops: bool
    draws: int
    seed: int


def make_plan(args: Any, train_args: list[str], base: Config) -> Plan:
    """The folds of the lake at `args.data_dir` and the settings to record. The lake is
    scanned (its time range, rows and label horizon: the default embargo); raises the
    scan's `DataError` and the folds' `UserError`s."""
    from src.data.lake import scan_lake
    from src.data.split import SplitBounds
    from src.modelling.labels import lake_label

    data_dir = Path(args.data_dir).resolve()
    index = scan_lake(
        data_dir,
        seq_len=base.data.seq_len,
        max_gap_bars=base.data.max_gap_bars,
        bounds=SplitBounds(2**62, 2**62),  # no split: only the time range is needed here
    )
    horizon = lake_label(index.meta).get("horizon_minutes", LabelConfig().horizon_minutes)
    embargo = int(horizon if args.embargo_minutes is None else args.embargo_minutes)
    folds = fold_bounds(
        index.t_min_ms, index.t_max_ms, folds=args.folds, rolling=args.scheme == "rolling",
        val_fraction=args.val_fraction, embargo_minutes=embargo,
    )  # fmt: skip
    try:
        costs = Costs(fee_bps=args.fee_bps, slippage_bps=args.slippage_bps)
    except ValueError as err:
        raise UserError(str(err)) from None
    if args.random_draws < 0:
        raise UserError(f"--random-draws must be >= 0, got {args.random_draws}")
    if args.random_seed < 0:  # numpy's generators take no negative seed
        raise UserError(f"--random-seed must be >= 0, got {args.random_seed}")
    settings = {
        "data_dir": str(data_dir),
        "folds": args.folds,
        "scheme": args.scheme,
        "val_fraction": args.val_fraction,
        "embargo_minutes": embargo,
        "fee_bps": costs.fee_bps,
        "slippage_bps": costs.slippage_bps,
        "short_stops": bool(args.short_stops),
        "random_draws": args.random_draws,
        "random_seed": args.random_seed,
        "train_args": list(train_args),
        "lake": {
            "files": len(index.files),
            "rows": index.n_rows,
            "first_bar": iso(index.t_min_ms),
            "last_bar": iso(index.t_max_ms),
            "bar_ms": index.bar_ms,
        },
    }
    return Plan(
        Path(args.out), data_dir, folds, list(train_args), settings, costs,
        bool(args.short_stops), args.random_draws, args.random_seed,
    )  # fmt: skip


class Barrier:
    """Ranks other than 0 wait here for rank 0 (a no-op in a single process)."""

    def __init__(self, world: Any) -> None:
        self.group = None
        if world.distributed:
            import torch.distributed as dist

            self.group = dist.new_group(backend="gloo", timeout=WAIT_TIMEOUT)

    def wait(self) -> None:
        if self.group is not None:
            import torch.distributed as dist

            dist.barrier(group=self.group)


def _fold_line(fold: Fold, total: int, scheme: str) -> str:
    b = fold.to_dict()
    return (
        f"[FOLD {fold.k}/{total}] {scheme}: train {b['train_from']} to {b['val_start']}, "
        f"validation to {b['test_start']}, test to {b['test_end']} | purge and "
        f"{fold.embargo_ms // 60_000}-minute embargo at both boundaries"
    )


def run_plan(
    plan: Plan, world: Any, device: Any, *, setup: list[str], governor: Any, prog: str
) -> Path | None:
    """Run every fold not done yet, then the pooled report; its path on rank 0 (None
    on the other ranks). Raises `RunInterrupted` when a fold's training was stopped by
    a signal (its `last` checkpoint written: the same command continues it)."""
    started = time.perf_counter()
    known = check_settings(plan.out, plan.settings)  # every rank: all refuse alike
    if world.is_main:
        writable_dir(plan.out, "--out")
        if not known:
            record_settings(plan.out, plan.settings)
    barrier = Barrier(world)
    barrier.wait()
    computed = 0
    scheme = plan.settings["scheme"]
    for fold in plan.folds:
        paths = FoldPaths(plan.out, fold.k)
        if paths.done():
            log.info(f"[FOLD {fold.k}/{len(plan.folds)}] done: {paths.result_json}")
            continue
        log.info(_fold_line(fold, len(plan.folds), scheme))
        t0 = time.perf_counter()
        train_fold(
            plan.train_args, fold, plan.data_dir, paths, world=world, device=device,
            setup=setup, governor=governor, prog=prog,
        )  # fmt: skip
        if world.is_main:
            judge_fold(
                fold, plan.data_dir, paths, costs=plan.costs, short_stops=plan.short_stops,
                draws=plan.draws, seed=plan.seed, device=device,
                train_seconds=time.perf_counter() - t0,
            )  # fmt: skip
            log.info(f"[FOLD {fold.k}/{len(plan.folds)}] judged: {paths.result_json}")
        computed += 1
        barrier.wait()
    if not world.is_main:
        return None
    path = plan.out / REPORT_NAME
    if computed or not path.is_file():
        loaded = [load_result(FoldPaths(plan.out, f.k)) for f in plan.folds]
        report, times, equity = pooled_report(
            plan.settings, [s for s, _ in loaded], [a for _, a in loaded]
        )
        write_report(plan.out, report, times, equity)
    else:
        import json

        report = json.loads(path.read_text())
    log.info(format_table(report))
    log.info(
        f"[WALK-FORWARD] {len(plan.folds)} folds ({computed} computed now) in "
        f"{time.perf_counter() - started:.1f}s | equity curve {plan.out / report['png']}"
    )
    return path
