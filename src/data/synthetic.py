"""Synthetic raw candles: the embedded default dataset and a leakage canary.

    saimp synthetic --raw-dir data/raw/synthetic [--synthetic-seed 7] [--synthetic-bars 200000]
        [--bar-minutes 1|15] [--mode planted|random_walk] [--symbols 1]

The price is a geometric random walk whose per-bar volatility is the product of
  * a Markov-switching regime (calm / normal / turbulent, persisting for hours),
  * a slowly varying lognormal factor (volatility clustering inside a regime),
  * an intraday seasonal (busier around the US session),
with Student-t increments (fat tails). Each bar opens at the previous close; high and
low extend beyond open/close by exponential wicks proportional to the volatility.
Volume rises with volatility and with the size of the bar's move; the taker-buy share
follows a persistent latent order-flow process plus the bar's own move.

Modes:
  * ``planted`` (default): the expected return of the next bars is a small multiple of
    the latent order flow, so the recent taker-buy imbalance weakly predicts the future
    drift. A model can beat chance, but not by much.
  * ``random_walk``: independent, identically distributed increments: zero drift and a
    constant volatility (no regimes, no clustering, no intraday seasonal), and order
    flow independent of the future. Nothing about a bar's future, neither the direction
    nor the size of its moves, can be read from the past, so no model can beat the
    label-blind baselines on it: a leakage canary. With constant volatility the label
    mix differs: about 77 % Neutro, 13 % Stop, 10 % Long and 0.1 % SuperLong.

The scale is tuned so that the default labels (120 minutes, +0.8 % / +1.6 % / -0.75 %)
on 1-minute bars give about 79-80 % Neutro, 10-11 % Stop, 7 % Long and 3 % SuperLong
(200k bars, seed 7; 15-minute bars give a similar mix).
Everything is drawn from one seeded `numpy.random.Generator`: a seed gives the same
candles on every run.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Literal

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from src.config import Config, DataConfig
from src.core import constants as C
from src.core.errors import ArgumentParser, UserError
from src.data.lake_format import month_slices
from src.data.prepare import replace_dir, staging_dir
from src.flags import ConfigFlags, alias

log = logging.getLogger(__name__)

Mode = Literal["planted", "random_walk"]
MODES: tuple[str, ...] = ("planted", "random_walk")

#: First bar of every synthetic series (UTC), fixed so files are reproducible.
START = np.datetime64("2024-01-01T00:00:00", "ms")
DEFAULT_SYMBOL = "SYNTH"
START_PRICE = 30_000.0

# Volatility per 1-minute bar (log-return standard deviation) in the normal regime.
_BASE_VOL = 0.00038
# Regimes: volatility multiplier and mean duration in minutes.
_REGIME_VOL = np.array([0.4, 0.8, 3.0])
_REGIME_MINUTES = np.array([600.0, 300.0, 300.0])
# Where a regime goes when it ends (rows: from, columns: to; the diagonal is unused).
_REGIME_NEXT = np.array([[0.0, 0.85, 0.15], [0.6, 0.0, 0.4], [0.3, 0.7, 0.0]])
_LOGVOL_SD = 0.25  # lognormal volatility clustering inside a regime
_LOGVOL_HALF_LIFE_MIN = 120.0
_RANDOM_WALK_VOL = 0.00045  # random_walk: constant volatility per 1-minute bar
_T_DOF = 4.0  # Student-t degrees of freedom of the increments
_WICK = 0.45  # mean wick beyond open/close, in units of the bar's volatility
_FLOW_HALF_LIFE_MIN = 30.0  # persistence of the latent order flow...
_FLOW_HALF_LIFE_MIN_BARS = 4.0  # ...but at least this many bars (15-minute bars)
_FLOW_TO_DRIFT = 0.05  # planted: drift per bar = this x volatility x latent flow
_FLOW_SHARE = 0.6  # weight of the latent flow in the taker-buy share
_MOVE_SHARE = 0.5  # weight of the bar's own move in the taker-buy share
_FLOW_NOISE = 0.9  # idiosyncratic noise of the taker-buy share
_BASE_VOLUME = 40.0  # volume of a typical 1-minute bar


def _exp_kernel(half_life_bars: float) -> np.ndarray:
    """Causal AR(1)-like kernel phi**k, truncated at 8 half-lives, unit L2 norm."""
    phi = 0.5 ** (1.0 / max(half_life_bars, 1e-9))
    k = np.arange(max(1, math.ceil(8 * half_life_bars)))
    w = phi**k
    return w / np.sqrt(np.sum(w * w))


def _smooth_noise(rng: np.random.Generator, n: int, half_life_bars: float) -> np.ndarray:
    """A stationary, unit-variance, persistent Gaussian process (causal moving average).

    Equivalent to an AR(1) with the given half-life, without a Python loop; the burn-in
    (kernel length) makes the first values as variable as the rest.
    """
    kernel = _exp_kernel(half_life_bars)
    noise = rng.standard_normal(n + kernel.size - 1)
    return np.convolve(noise, kernel, mode="valid")


def _regimes(rng: np.random.Generator, n: int, bar_minutes: int) -> np.ndarray:
    """Markov-switching regime index per bar (durations are geometric, in bars)."""
    mean_bars = np.maximum(_REGIME_MINUTES / bar_minutes, 1.0)
    out = np.empty(n, np.int64)
    state = int(rng.integers(len(_REGIME_VOL)))
    filled = 0
    while filled < n:  # one iteration per regime spell (hundreds, not n)
        length = int(rng.geometric(1.0 / mean_bars[state]))
        out[filled : filled + length] = state
        filled += length
        state = int(rng.choice(len(_REGIME_VOL), p=_REGIME_NEXT[state]))
    return out


def _intraday(minute_of_day: np.ndarray) -> np.ndarray:
    """Volatility seasonal: +30 % around 15:00 UTC, -30 % twelve hours later."""
    return 1.0 + 0.3 * np.cos(2.0 * np.pi * (minute_of_day - 15 * 60) / 1440.0)


def _student_t(rng: np.random.Generator, n: int) -> np.ndarray:
    """Student-t draws scaled to unit variance."""
    return rng.standard_t(_T_DOF, n) * math.sqrt((_T_DOF - 2.0) / _T_DOF)


def _volatility(rng: np.random.Generator, minutes: np.ndarray, bar_minutes: int) -> np.ndarray:
    """Per-bar log-return volatility: regime x clustering x intraday seasonal."""
    n = minutes.shape[0]
    regime = _REGIME_VOL[_regimes(rng, n, bar_minutes)]
    clustering = np.exp(
        _LOGVOL_SD * _smooth_noise(rng, n, _LOGVOL_HALF_LIFE_MIN / bar_minutes)
        - 0.5 * _LOGVOL_SD**2  # mean 1
    )
    # A bar of k minutes has k times the variance of a 1-minute bar.
    return _BASE_VOL * math.sqrt(bar_minutes) * regime * clustering * _intraday(minutes % 1440)


def _ohlc(
    rng: np.random.Generator, log_ret: np.ndarray, vol: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Candles from log returns: each bar opens at the previous close, and high / low
    reach beyond open / close by exponential wicks scaled by the bar's volatility."""
    n = log_ret.shape[0]
    log_ret = log_ret.copy()
    log_ret[0] = 0.0
    close = START_PRICE * np.exp(np.cumsum(log_ret))
    open_ = np.concatenate(([START_PRICE], close[:-1]))
    high = np.maximum(open_, close) * np.exp(vol * rng.exponential(_WICK, n))
    low = np.minimum(open_, close) * np.exp(-vol * rng.exponential(_WICK, n))
    return open_, high, low, close


def _volume_and_taker(
    rng: np.random.Generator, vol_per_minute: np.ndarray, shock: np.ndarray, flow: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Volume per minute of bar, and its taker-buy part.

    Volume grows with volatility and with the size of the bar's move (lognormal noise
    on top). The taker-buy share is a logistic of the persistent latent flow, the bar's
    own move (buyers push the price up) and noise, so it is never exactly 0 or 1.
    """
    n = shock.shape[0]
    volume = (
        _BASE_VOLUME
        * (vol_per_minute / _BASE_VOL)
        * (0.6 + 0.4 * np.abs(shock))
        * np.exp(0.4 * rng.standard_normal(n) - 0.08)
    )
    share_logit = (
        _FLOW_SHARE * flow
        + _MOVE_SHARE * np.clip(shock, -4, 4)
        + _FLOW_NOISE * rng.standard_normal(n)
    )
    return volume, volume / (1.0 + np.exp(-share_logit))


def generate_candles(
    n_bars: int,
    *,
    seed: int,
    bar_minutes: int = 1,
    mode: Mode = "planted",
    symbol: str = DEFAULT_SYMBOL,
) -> pa.Table:
    """Generate `n_bars` candles in the raw data contract (see the module docstring).

    Columns: timestamp (ms, UTC), open, high, low, close, volume, taker_buy_volume,
    symbol. Deterministic for a given seed and arguments.
    """
    if n_bars < 1:
        raise ValueError(f"n_bars must be >= 1, got {n_bars}")
    if bar_minutes < 1:
        raise ValueError(f"bar_minutes must be >= 1, got {bar_minutes}")
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    rng = np.random.default_rng(seed)
    minutes = np.arange(n_bars, dtype=np.int64) * bar_minutes
    # The draw order below is part of the output: keep it when editing.
    if mode == "planted":
        vol = _volatility(rng, minutes, bar_minutes)
    else:
        # Persistent volatility would make the size of future moves (and so whether any
        # barrier is hit) predictable from the past; the canary must have none of that.
        vol = np.full(n_bars, _RANDOM_WALK_VOL * math.sqrt(bar_minutes))
    flow = _smooth_noise(
        rng, n_bars, max(_FLOW_HALF_LIFE_MIN / bar_minutes, _FLOW_HALF_LIFE_MIN_BARS)
    )
    shock = _student_t(rng, n_bars)
    drift = np.zeros(n_bars)
    if mode == "planted":
        # The flow known at the end of bar t-1 tilts the return of bar t (and, since the
        # flow persists, of the following bars): the relation a model can learn.
        drift[1:] = _FLOW_TO_DRIFT * vol[1:] * flow[:-1]
    open_, high, low, close = _ohlc(rng, drift + vol * shock, vol)
    volume, taker_buy = _volume_and_taker(rng, vol / math.sqrt(bar_minutes), shock, flow)
    volume *= bar_minutes
    taker_buy *= bar_minutes
    timestamp = START + minutes.astype("timedelta64[m]")

    return pa.table(
        {
            C.TIMESTAMP_COL: pa.array(timestamp.astype(np.int64), pa.timestamp("ms", tz="UTC")),
            "open": open_,
            "high": high,
            "low": low,
            "close": close,
            "volume": volume,
            "taker_buy_volume": taker_buy,
            C.SYMBOL_COL: pa.repeat(pa.scalar(symbol, pa.string()), n_bars),
        }
    )


def symbol_names(n_symbols: int) -> list[str]:
    """`SYNTH` for one symbol; `SYNTH1`, `SYNTH2`, ... for several."""
    if n_symbols < 1:
        raise ValueError(f"n_symbols must be >= 1, got {n_symbols}")
    if n_symbols == 1:
        return [DEFAULT_SYMBOL]
    return [f"{DEFAULT_SYMBOL}{i + 1}" for i in range(n_symbols)]


def write_raw(
    out_dir: Path,
    *,
    n_bars: int | None = None,
    seed: int | None = None,
    bar_minutes: int | None = None,
    mode: Mode = "planted",
    n_symbols: int = 1,
) -> list[Path]:
    """Write synthetic candles to `out_dir`, one `{SYMBOL}_{YYYY-MM}.parquet` per month.

    Defaults come from `DataConfig` (200k bars, seed 7, 1-minute bars). Symbol i (from 0)
    uses seed + i. The directory is replaced as a whole (built next to it, then swapped
    in), so an interrupted run never leaves a mix of old and new files; a directory that
    holds anything else than synthetic files is refused.
    """
    defaults = DataConfig()
    n_bars = defaults.synthetic_bars if n_bars is None else n_bars
    seed = defaults.synthetic_seed if seed is None else seed
    bar_minutes = defaults.bar_minutes if bar_minutes is None else bar_minutes
    out_dir = Path(out_dir)
    _check_synthetic_target(out_dir)

    written: list[str] = []
    with staging_dir(out_dir) as stage:
        for i, symbol in enumerate(symbol_names(n_symbols)):
            table = generate_candles(
                n_bars, seed=seed + i, bar_minutes=bar_minutes, mode=mode, symbol=symbol
            )
            ts = table.column(C.TIMESTAMP_COL).cast(pa.int64()).to_numpy()
            for month, part in month_slices(ts):
                name = f"{symbol}_{month}.parquet"
                pq.write_table(table.slice(part.start, part.stop - part.start), stage / name)
                written.append(name)
        replace_dir(stage, out_dir)
    return [out_dir / name for name in written]


def _is_synthetic_file(path: Path) -> bool:
    stem = path.stem
    return (
        path.is_file()
        and path.suffix == ".parquet"
        and stem.startswith(DEFAULT_SYMBOL)
        and "_" in stem
    )


def _check_synthetic_target(out_dir: Path) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise UserError(f"--raw-dir {out_dir} is a file; give a directory")
    if out_dir.is_dir():
        foreign = [p.name for p in sorted(out_dir.iterdir()) if not _is_synthetic_file(p)]
        if foreign:
            raise UserError(
                f"--raw-dir {out_dir} holds files that are not synthetic candles "
                f"(e.g. {foreign[0]}); choose an empty or new directory"
            )


# The settings `saimp synthetic` shares with the default data of `saimp train`.
_SECTIONS: dict[str, tuple[str, ...] | None] = {
    "paths": ("raw_dir",),
    "data": ("synthetic_bars", "synthetic_seed", "bar_minutes"),
}


def main(argv: list[str] | None = None, prog: str = "saimp synthetic") -> int:
    parser = ArgumentParser(
        prog=prog,
        description="Write synthetic raw candles, one Parquet file per symbol and month.",
    )
    flags = ConfigFlags(parser, _SECTIONS, Config())
    parser.add_argument("--mode", choices=MODES, default="planted")
    parser.add_argument("--symbols", type=int, default=1, help="number of symbols")
    alias(parser, "--out", "--raw-dir")
    alias(parser, "--seed", "--synthetic-seed")
    alias(parser, "--bars", "--synthetic-bars")
    args = parser.parse_args(argv)
    cfg = flags.config(args)
    if args.symbols < 1:
        raise UserError(f"--symbols must be >= 1, got {args.symbols}")
    d = cfg.data
    paths = write_raw(
        cfg.paths.raw_dir,
        n_bars=d.synthetic_bars,
        seed=d.synthetic_seed,
        bar_minutes=d.bar_minutes,
        mode=args.mode,
        n_symbols=args.symbols,
    )
    log.info(
        f"wrote {len(paths)} files ({args.symbols} symbol(s) x {d.synthetic_bars} bars of "
        f"{d.bar_minutes} min, mode {args.mode}, seed {d.synthetic_seed}) to {cfg.paths.raw_dir}"
    )
    return 0


if __name__ == "__main__":
    from src.cli import run_module

    run_module(__spec__.name)  # as the module, so its log lines are under `src`
