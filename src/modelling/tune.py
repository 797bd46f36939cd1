"""`saimp tune`: hyperparameter search over `train()` with Optuna, resumable and parallel.

    saimp tune --data-dir LAKE --trials 20 [--space space.toml] [--jobs 2] [--out tune]
        [--study saimp] [--storage sqlite:///tune/study.db] [--objective val_macro_f1]
        [--pruner median] [any flag of saimp train]

Each trial is a normal training run (`training/run.py`) in `{out}/trials/{number}`,
reporting its validation metric every epoch to the pruner (TPE sampler, median pruner
by default). The study lives in a database: the same command continues it after a kill
until exactly `--trials` trials have finished (complete or pruned); `--jobs J` runs J
trial processes sharing the database and the machine's CPU threads; on several hosts,
run the same command with one shared `--storage` URL (PostgreSQL or MySQL). The last
line printed is the path of `best.toml`, which `saimp train --config` accepts.
"""

from __future__ import annotations

import argparse
import logging
import subprocess
import sys
import warnings
from functools import partial
from pathlib import Path

from src.core.errors import UserError
from src.modelling.training.signals import RunInterrupted

log = logging.getLogger(__name__)


def build_parser(prog: str) -> argparse.ArgumentParser:
    from src.modelling.training.cli import build_parser as train_parser

    p = train_parser(prog)
    p.description = (
        "Search hyperparameters of SAIMP with Optuna: every trial is a saimp train run with "
        "sampled settings; the flags of saimp train set everything the search does not. "
        "Prints the path of best.toml last."
    )
    g = p.add_argument_group("search")
    g.add_argument(
        "--trials",
        type=int,
        default=20,
        help="trials to finish, complete or pruned (default: %(default)s)",
    )
    g.add_argument("--study", default="saimp", help="study name in the storage")
    g.add_argument(
        "--storage",
        help="database URL shared by every process of the search (default: "
        "sqlite:///OUT/study.db; PostgreSQL or MySQL to search from several hosts)",
    )
    g.add_argument("--space", type=Path, help="TOML search space (default: the built-in one)")
    g.add_argument("--jobs", type=int, default=1, help="trial processes here (default: 1)")
    g.add_argument("--out", type=Path, default=Path("tune"), help="results (default: tune)")
    g.add_argument(
        "--objective", choices=("val_macro_f1", "val_loss"), default="val_macro_f1",
        help="what the search optimises (default: val_macro_f1)",
    )  # fmt: skip
    g.add_argument(
        "--pruner", choices=("median", "hyperband", "none"), default="median",
        help="stops trials that fall behind (default: median)",
    )  # fmt: skip
    g.add_argument("--sampler-seed", type=int, default=0, help="TPE sampler seed (default: 0)")
    g.add_argument("--worker-quota", type=int, help=argparse.SUPPRESS)
    return p


def main(argv: list[str] | None = None, prog: str = "saimp tune") -> int:
    from src.core.logs import setup_console
    from src.core.paths import writable_dir
    from src.modelling.training.cli import config_from_args

    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser(prog).parse_args(argv)
    cfg = config_from_args(args)
    if args.resume is not None:
        raise UserError("--resume: saimp tune continues its study by itself; drop the flag")
    if args.trials < 1 or args.jobs < 1:
        raise UserError(f"--trials and --jobs must be >= 1, got {args.trials} and {args.jobs}")
    setup_console()
    try:
        _quiet_optuna()
    except ImportError:
        raise UserError(
            "saimp tune needs Optuna, in the optional 'tune' extra: pip install -e '.[tune]'"
        ) from None
    from src.modelling.tuning import study as st
    from src.modelling.tuning.space import load_space

    space = load_space(args.space, cfg)
    out = writable_dir(args.out, "--out")
    url = args.storage or f"sqlite:///{(out / 'study.db').resolve()}"
    direction = "maximize" if args.objective == "val_macro_f1" else "minimize"
    storage = st.open_storage(url)
    pruner = st.make_pruner(args.pruner, cfg.train.epochs)
    open_study = partial(st.load, storage, args.study, direction, pruner, args.sampler_seed)
    if args.worker_quota is not None:
        try:
            return _work(args, cfg, space, out, open_study, args.worker_quota)
        except RunInterrupted as stop:
            return stop.exit_code

    study = open_study()
    st.fail_dead_trials(study)
    c = st.counts(study)
    remaining = args.trials - st.finished(study) - c.get("RUNNING", 0)
    log.info(
        f"[TUNE] study {args.study} at {url}: {st.finished(study)} finished, "
        f"{c.get('RUNNING', 0)} running elsewhere, {max(remaining, 0)} to run with "
        f"{args.jobs} job(s)"
    )
    try:
        if remaining > 0 and args.jobs == 1:
            _work(args, cfg, space, out, open_study, remaining)
        elif remaining > 0:
            _spawn(argv, args.jobs, remaining, url, cfg)
    except RunInterrupted as stop:
        log.info(f"[STOP] {stop}: the trial in progress is marked failed; rerun to continue")
        return stop.exit_code
    return _finish(args, cfg, open_study(), out, url)


def _quiet_optuna() -> None:
    """Optuna's own handler prints tracebacks of caught errors; our lines say it instead."""
    import optuna

    optuna.logging.disable_default_handler()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    # The pruners and storage options used here are stable in practice; their
    # "experimental" notes would only clutter every search's output.
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)


def _work(args, cfg, space, out, open_study, quota: int) -> int:
    from src.core.threads import apply_thread_budget
    from src.modelling.training.distributed import World, device_for
    from src.modelling.tuning.objective import run_trial
    from src.modelling.tuning.study import run_trials

    threads, governor = apply_thread_budget(cfg.train.threads, args.jobs)
    device = device_for(World())
    objective = partial(
        run_trial, space=space, base=cfg, out=out, metric=args.objective, device=device,
        setup=[threads], governor=governor,
    )  # fmt: skip
    run_trials(open_study, quota, objective)
    return 0


def _spawn(argv: list[str], jobs: int, remaining: int, url: str, cfg) -> None:
    """`jobs` worker processes splitting `remaining` trials; all share the storage."""
    from src.data.default_data import ensure_default_data
    from src.modelling.training.distributed import World

    ensure_default_data(cfg, World())  # once, before the workers would race to make it
    quotas = [remaining // jobs + (i < remaining % jobs) for i in range(jobs)]
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "src.modelling.tune",
                *argv,
                "--storage",
                url,
                "--worker-quota",
                str(q),
            ]
        )  # fmt: skip
        for q in quotas
        if q > 0
    ]
    codes = [p.wait() for p in procs]
    if any(codes):
        raise UserError(
            f"{sum(1 for c in codes if c)} of {len(procs)} trial processes failed (exit codes "
            f"{codes}); their trials are marked failed: rerun the same command to continue"
        )


def _finish(args, cfg, study, out: Path, url: str) -> int:
    from src.modelling.tuning import outputs
    from src.modelling.tuning.space import describe
    from src.modelling.tuning.study import finished

    n = finished(study)
    try:
        best = study.best_trial
    except ValueError:
        raise UserError(
            f"study {args.study}: no trial completed ({n} finished, all pruned?); run more "
            "--trials or use --pruner none"
        ) from None
    cfg_best = outputs.best_config(cfg, best.params, args.objective)
    checkpoint = Path(best.user_attrs.get("checkpoint", ""))
    header = (
        f"saimp tune: study {args.study} ({url}), best of {n} finished trials: "
        f"trial {best.number}, {args.objective} {best.value:.4f}\nmodel: {checkpoint}"
    )
    toml = outputs.write_best_toml(cfg_best, out / "best.toml", header)
    outputs.write_trials_csv(study, out / "trials.csv")
    plots = outputs.write_plots(study, out)
    if checkpoint.is_file():
        outputs.record_in_sidecar(
            checkpoint,
            {"study": args.study, "storage": url, "trials": n, "trial": best.number,
             "objective": args.objective, "value": best.value},
        )  # fmt: skip
    shown = describe(best.params)
    log.info(f"[TUNE] best: trial {best.number}, {args.objective} {best.value:.4f} | {shown}")
    log.info(f"[TUNE] {out / 'trials.csv'} | " + " | ".join(str(p) for p in plots))
    log.info(str(toml))
    return 0


if __name__ == "__main__":
    from src.cli import run_module

    run_module(__spec__.name)  # as the module, so its log lines are under `src`
