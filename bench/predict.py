"""Prediction throughput and `--latest` latency, beside the training speed of the same model.

    python -m bench.predict                    # 60k one-minute bars, 5 rounds (~2 minutes)
    python -m bench.predict --bars 20000 --rounds 3 --latest-calls 20

Builds, in a temporary directory, a synthetic market (`saimp synthetic`, one symbol of
one-minute bars) and its lake (`saimp prepare`), and a checkpoint of the default model
(`ModelConfig()` with `DataConfig().seq_len`: 17 features, seq 32, d_model 32, 4 heads, 2
layers, d_ff 64; random weights: speed does not depend on them) with its real sidecar.
Then, in rounds (the order rotated each round, so every measure meets the machine's
slow and fast seconds alike):

- predict from the lake: what `saimp predict --data-dir` does after start-up: scan and
  check the lake, stream it file by file with halos, model, calibration, decision, and
  write the Parquet output; windows/s = output rows / that time;
- predict from raw candles: the same for `--raw-dir` (read each symbol's candles,
  compute the features, normalise, window...);
- training: a plain loop (not the project's Trainer: no logging or checkpoints, so it
  is the faster of the two) of the same model in train mode (dropout 0.1), AdamW (lr
  1e-3, weight decay 1e-4) and class-weighted cross entropy (1, 10, 10, 20), on
  in-memory random batches (no loader), fp32, at batch 64 (`saimp train`'s default) and
  at batch 512 (prediction's default); samples/s after two warm-up steps;
- `--latest` latency for one symbol: `predict_symbol(..., latest=True)` on its candles
  already in memory (features of the last bars, normalisation, windowing, model,
  calibration: what `saimp predict --latest` prints), repeated in this one process after
  start-up and a warm-up call (so `import torch` and first-call costs are not counted);
  the median of `--latest-calls` calls per round.

Each round also records how many cores other processes used meanwhile (psutil). The
targets: from a lake >= 3x the training samples/s, from raw candles >= 2x, `--latest`
under 150 ms. The training figure the ratios use is the larger of the two batch sizes'
(the harder target), per round; the tables give medians over rounds.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil
import torch

LAKE_TARGET, RAW_TARGET, LATENCY_TARGET_MS = 3.0, 2.0, 150.0


def build(root: Path, n_bars: int) -> dict[str, Any]:
    """Raw candles, their lake and a default-model checkpoint with its sidecar."""
    from src.config import Config, DataConfig, ModelConfig, PathsConfig, TrainConfig
    from src.data.dataloader import build_data
    from src.data.prepare import prepare_lake
    from src.data.synthetic import write_raw
    from src.modelling.checkpointing.best import save_best
    from src.modelling.checkpointing.sidecar import sidecar_for
    from src.modelling.training import components

    raw, lake = root / "raw", root / "lake"
    write_raw(raw, n_bars=n_bars, seed=7, bar_minutes=1)
    prepare_lake(raw, lake, workers=1, log=lambda _: None)
    cfg = Config(
        paths=PathsConfig(data_dir=lake, checkpoint=root / "model.pth"),
        data=DataConfig(),
        model=ModelConfig(),
        train=TrainConfig(),
    )
    data = build_data(cfg, splits=("val",))
    model = components.build_model(cfg, data.index.num_features)
    save_best(model, cfg.paths.checkpoint, {**sidecar_for(cfg, data, model), "epoch": 1})
    return {"raw": raw, "lake": lake, "checkpoint": cfg.paths.checkpoint, "cfg": cfg}


class OtherLoad:
    """Cores used by other processes while the block runs (machine busy time minus ours)."""

    def __enter__(self) -> OtherLoad:
        self._t = time.perf_counter()
        self._busy = self._machine_busy()
        self._ours = self._our_cpu()
        return self

    def __exit__(self, *exc: object) -> None:
        wall = time.perf_counter() - self._t
        others = (self._machine_busy() - self._busy) - (self._our_cpu() - self._ours)
        self.cores = max(0.0, others / wall)

    @staticmethod
    def _machine_busy() -> float:
        t = psutil.cpu_times()
        return sum(t) - t.idle - getattr(t, "iowait", 0.0)

    @staticmethod
    def _our_cpu() -> float:
        t = psutil.Process().cpu_times()
        return t.user + t.system


def predict_throughput(setup: dict[str, Any], source: str, out: Path) -> float:
    """Windows/s of a whole `saimp predict` run after start-up (model loaded)."""
    from src.modelling.prediction.from_candles import predict_raw_dir
    from src.modelling.prediction.from_lake import open_lake, predict_lake
    from src.modelling.prediction.output import PredictionWriter

    predictor = setup["predictor"]
    started = time.perf_counter()
    if source == "lake":
        parts = predict_lake(predictor, open_lake(predictor, setup["lake"]))
    else:
        parts = predict_raw_dir(predictor, setup["raw"])
    with PredictionWriter(out, predictor.schema) as writer:
        for part in parts:
            writer.write(part.table)
        writer.commit()
    return writer.rows / (time.perf_counter() - started)


def make_training(setup: dict[str, Any], batch: int, steps: int) -> Callable[[], float]:
    """A function timing `steps` training steps of the default model at `batch`."""
    from src.modelling.evaluation.inference import load_model

    model, _ = load_model(setup["checkpoint"])  # the same model, trained from here
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-4)
    loss_fn = torch.nn.CrossEntropyLoss(weight=torch.tensor([1.0, 10.0, 10.0, 20.0]))
    g = torch.Generator().manual_seed(0)
    n_feat, seq = model.cfg.n_features, model.cfg.seq_len
    xs = [torch.randn(batch, seq, n_feat, generator=g) for _ in range(4)]
    ys = [torch.randint(0, 4, (batch,), generator=g) for _ in range(4)]

    def step(i: int) -> None:
        opt.zero_grad(set_to_none=True)
        loss_fn(model(xs[i % 4]), ys[i % 4]).backward()
        opt.step()

    def run() -> float:
        for i in range(2):  # warm-up
            step(i)
        started = time.perf_counter()
        for i in range(steps):
            step(i)
        return steps * batch / (time.perf_counter() - started)

    return run


def make_latency(setup: dict[str, Any], calls: int) -> Callable[[], float]:
    """A function giving the median ms of `calls` --latest predictions of one symbol."""
    from src.data.raw_io import read_symbol
    from src.modelling.prediction.from_candles import predict_symbol, raw_files_by_symbol

    predictor = setup["predictor"]
    symbol, paths = next(iter(raw_files_by_symbol(setup["raw"]).items()))
    read = read_symbol(paths, symbol)  # in memory before the clock starts

    def once() -> float:
        part = predict_symbol(predictor, read.candles, read.bar_ms, where="bench", latest=True)
        assert part.table.num_rows == 1
        return part.seconds * 1000

    once()  # warm-up: first-call allocations

    def run() -> float:
        return statistics.median(once() for _ in range(calls))

    return run


def fmt(x: float, unit: str) -> str:
    return f"{x:,.1f}" if unit == "ms" else f"{x:,.0f}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.predict", description=__doc__.split("\n")[0])
    p.add_argument("--bars", type=int, default=60_000, help="one-minute bars of the one symbol")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--train-steps", type=int, default=20, help="timed steps per batch size")
    p.add_argument("--latest-calls", type=int, default=30)
    args = p.parse_args(argv)

    from src.modelling.prediction.predictor import Predictor

    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="bench_predict_") as tmp:
        root = Path(tmp)
        t0 = time.perf_counter()
        setup = build(root, args.bars)
        setup["predictor"] = Predictor.load(setup["checkpoint"])
        setup["predictor"].warm_up()
        built_s = time.perf_counter() - t0
        measures: dict[str, Callable[[], float]] = {
            "lake": lambda: predict_throughput(setup, "lake", root / "lake_out.parquet"),
            "raw": lambda: predict_throughput(setup, "raw", root / "raw_out.parquet"),
            "train64": make_training(setup, 64, args.train_steps * 4),
            "train512": make_training(setup, 512, args.train_steps),
            "latest": make_latency(setup, args.latest_calls),
        }
        names = list(measures)
        values: dict[str, list[float]] = {n: [] for n in names}
        others: list[float] = []
        for r in range(args.rounds):
            order = names[r % len(names) :] + names[: r % len(names)]
            with OtherLoad() as load:
                for name in order:
                    values[name].append(measures[name]())
            others.append(load.cores)
            print(
                f"round {r + 1}/{args.rounds}: "
                + ", ".join(
                    f"{n} {fmt(values[n][-1], 'ms' if n == 'latest' else '')}" for n in names
                )
                + f" | other load {load.cores:.2f} cores",
                flush=True,
            )
    load_after = os.getloadavg()

    train = [max(a, b) for a, b in zip(values["train64"], values["train512"], strict=True)]
    lake_ratio = [a / t for a, t in zip(values["lake"], train, strict=True)]
    raw_ratio = [a / t for a, t in zip(values["raw"], train, strict=True)]
    med = {n: statistics.median(v) for n, v in values.items()}
    print()
    print(
        f"{platform.processor() or platform.machine()}, {psutil.cpu_count()} cores, torch "
        f"{torch.__version__}, {torch.get_num_threads()} threads; {args.bars:,} one-minute "
        f"bars (set-up {built_s:.1f} s); {args.rounds} rounds; load average "
        f"{load_before[0]:.2f} before, {load_after[0]:.2f} after; other processes "
        f"{min(others):.2f}-{max(others):.2f} cores during the rounds"
    )
    print()
    print("| measure | median | min - max over rounds |")
    print("|---|---:|---:|")
    rows = [
        ("predict from the lake, windows/s", "lake", ""),
        ("predict from raw candles, windows/s", "raw", ""),
        ("training, batch 64, samples/s (plain loop, AdamW + weighted CE)", "train64", ""),
        ("training, batch 512, samples/s (same)", "train512", ""),
        (
            f"`--latest` latency, one symbol, ms (median of {args.latest_calls} calls)",
            "latest",
            "ms",
        ),
    ]
    for label, key, unit in rows:
        v = values[key]
        print(f"| {label} | {fmt(med[key], unit)} | {fmt(min(v), unit)} - {fmt(max(v), unit)} |")
    print()
    lake_r, raw_r = statistics.median(lake_ratio), statistics.median(raw_ratio)
    lat = med["latest"]
    print("Targets (ratios per round to the faster training batch size, median):")
    print()
    for what, ratio, spread, target in (
        ("from the lake", lake_r, lake_ratio, LAKE_TARGET),
        ("from raw candles", raw_r, raw_ratio, RAW_TARGET),
    ):
        verdict = "met" if ratio >= target else "MISSED"
        print(
            f"- {what} {ratio:.1f}x training (>= {target:g}x): {verdict} "
            f"({min(spread):.1f}-{max(spread):.1f})"
        )
    verdict = "met" if lat < LATENCY_TARGET_MS else "MISSED"
    print(
        f"- `--latest` {lat:.1f} ms (< {LATENCY_TARGET_MS:g} ms): {verdict} "
        f"(round medians {min(values['latest']):.1f}-{max(values['latest']):.1f} ms)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
