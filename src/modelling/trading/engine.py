"""The backtest's accounting, in pure numpy: decisions in, trades and equity out.

Rules (stated as parameters a reader can check, like vectorbt's `from_signals`):

- A Long decision opens a long at the bar's close (the label's reference price) that
  exits where the labels decide: take profit at U1, stop at the lower barrier, else at
  the close of the last bar inside the horizon. SuperLong: the same with U2. Stop opens
  a short (take profit at the lower barrier, stop at U1) only with `short_stops`;
  Neutro stays flat. A bar touching both barriers counts as the stop, as in the labels.
  Exits and gross returns come from the lake (`src.data.labels.barrier_trades`).
- One position per symbol at a time: a signal while a position is open, or on the bar
  it exits on, is skipped and counted (a bar carries one order: the next position opens
  at the close of a later bar).
- Costs per side, in basis points of the traded value: slippage moves the fill against
  the trade (a long buys at p (1 + s) and sells at p (1 - s)), the fee is charged on
  the filled value (vectorbt's `fees`), so a long returns
  exit (1 - s)(1 - f) / (entry (1 + s)(1 + f)) - 1.
- Each symbol is a sub-account holding an equal share of the capital, fully invested
  while in a position; the portfolio is their mean.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from src.core.constants import TRADE_NAMES

#: decision class -> trade opened (Neutro opens nothing; Stop a short with short_stops).
NEUTRO, STOP, LONG, SUPERLONG = 0, 1, 2, 3
LONG_TRADES: dict[int, str] = {LONG: "long", SUPERLONG: "superlong"}
SIDE: dict[str, float] = {"long": 1.0, "superlong": 1.0, "short": -1.0}


@dataclass(frozen=True)
class Costs:
    fee_bps: float = 0.0
    """Fee per side, basis points of the filled value."""
    slippage_bps: float = 0.0
    """Slippage per side, basis points of the price, against the trade."""

    def __post_init__(self) -> None:
        for name in ("fee_bps", "slippage_bps"):
            value = getattr(self, name)
            if not 0 <= value < 10_000:
                raise ValueError(f"--{name.replace('_', '-')} must be in [0, 10000), got {value}")


@dataclass
class SymbolBars:
    """One symbol's bars of the backtested period, in time order (from the lake)."""

    symbol: str
    timestamp: np.ndarray
    """int64 epoch ms, (n,)."""
    close: np.ndarray
    """float64 (n,)."""
    label: np.ndarray
    """int8 (n,) the true classes (the `perfect` baseline's decisions)."""
    exit_ms: dict[str, np.ndarray]
    """trade -> int64 (n,) exit time of a trade entered at each bar."""
    gross: dict[str, np.ndarray]
    """trade -> float64 (n,) gross simple return of that trade."""
    risk: dict[str, np.ndarray]
    """trade -> float64 (n,) the stop's distance, a fraction of the entry (1R)."""

    def __len__(self) -> int:
        return int(self.timestamp.shape[0])


@dataclass
class Trades:
    """The trades taken, one entry per trade, in time order within each symbol."""

    symbol: list[str] = field(default_factory=list)
    entry_bar: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    """Index into the symbol's bars."""
    entry_ms: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    exit_ms: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    signal: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int8))
    """The decision class that opened the trade."""
    gross: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float64))
    net: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float64))
    """Simple return after fees and slippage."""
    r: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float64))
    """Net return in units of the trade's risk (R multiples)."""

    def __len__(self) -> int:
        return int(self.net.shape[0])


def trade_of(signal: int, short_stops: bool) -> str | None:
    """The trade a decision opens (None: stay flat)."""
    if signal in LONG_TRADES:
        return LONG_TRADES[signal]
    if signal == STOP and short_stops:
        return "short"
    return None


def net_returns(gross: np.ndarray, side: float | np.ndarray, costs: Costs) -> np.ndarray:
    """Simple returns after costs from gross ones (module docstring's cost model).

    A long's exit/entry price ratio is 1 + gross; a short's is 1 - gross.
    """
    s, f = costs.slippage_bps / 1e4, costs.fee_bps / 1e4
    side = np.asarray(side, np.float64)
    ratio = 1.0 + side * np.asarray(gross, np.float64)  # exit price / entry price
    long_net = ratio * (1 - s) * (1 - f) / ((1 + s) * (1 + f)) - 1.0
    # A short sells at p0 (1 - s) less the fee, buys back at p1 (1 + s) plus the fee.
    short_net = ((1 - s) * (1 - f) - ratio * (1 + s) * (1 + f)) / ((1 - s) * (1 - f))
    return np.where(side > 0, long_net, short_net)


def take_trades(timestamp: np.ndarray, signal_bars: np.ndarray, exit_ms: np.ndarray) -> np.ndarray:
    """Which of the signals (bar indices, increasing) open a position when one
    position is held at a time; returns the taken subset of `signal_bars`.

    `exit_ms[i]`: exit time (the exit bar's open time) of a position entered at
    signal_bars[i]. A signal is taken when its bar comes after the open position's exit
    bar. One vectorised binary search finds, for every signal, the first signal after
    its exit; the loop then runs once per trade taken.
    """
    signal_bars = np.asarray(signal_bars, np.int64)
    if signal_bars.size == 0:
        return signal_bars
    signal_ms = np.asarray(timestamp, np.int64)[signal_bars]
    # The first signal after each one's exit bar, for all at once; the walk over the
    # chain of taken trades is then a pointer chase through a plain list.
    following = np.searchsorted(signal_ms, np.asarray(exit_ms, np.int64), side="right")
    following = np.maximum(following, np.arange(1, signal_bars.size + 1)).tolist()
    taken = []
    i, n = 0, signal_bars.size
    while i < n:
        taken.append(i)
        i = following[i]
    return signal_bars[np.asarray(taken, np.int64)]


@dataclass
class SymbolResult:
    trades: Trades
    signals: dict[int, int]
    """decision class -> signals that would open a trade."""
    skipped: dict[int, int]
    """decision class -> such signals skipped because a position was open."""
    bar_returns: np.ndarray
    """float64 (n,) the sub-account's return over each bar (0 when flat)."""
    in_position: np.ndarray
    """bool (n,) holding a position at the bar's close."""


def simulate_symbol(
    bars: SymbolBars, decisions: np.ndarray, *, costs: Costs, short_stops: bool = False
) -> SymbolResult:
    """Trade one symbol's decisions (int class per bar, (n,)) by the module's rules."""
    decisions = np.asarray(decisions)
    n = len(bars)
    code = np.full(n, -1, np.int8)  # index into TRADE_NAMES, -1: flat
    for signal in (LONG, SUPERLONG, STOP):
        trade = trade_of(signal, short_stops)
        if trade is not None:
            code[decisions == signal] = TRADE_NAMES.index(trade)
    signal_bars = np.flatnonzero(code >= 0)
    exit_of_signal = np.zeros(signal_bars.size, np.int64)
    for k, trade in enumerate(TRADE_NAMES):
        sel = code[signal_bars] == k
        exit_of_signal[sel] = bars.exit_ms[trade][signal_bars[sel]]
    taken = take_trades(bars.timestamp, signal_bars, exit_of_signal)

    trade_code = code[taken]
    gross = np.zeros(taken.size)
    risk = np.ones(taken.size)
    exit_ms = np.zeros(taken.size, np.int64)
    side = np.zeros(taken.size)
    for k, trade in enumerate(TRADE_NAMES):
        sel = trade_code == k
        gross[sel] = bars.gross[trade][taken[sel]]
        risk[sel] = bars.risk[trade][taken[sel]]
        exit_ms[sel] = bars.exit_ms[trade][taken[sel]]
        side[sel] = SIDE[trade]
    net = net_returns(gross, side, costs)
    with np.errstate(divide="ignore", invalid="ignore"):
        r = np.where(risk > 0, net / risk, np.nan)
    trades = Trades(
        symbol=[bars.symbol] * taken.size,
        entry_bar=taken,
        entry_ms=bars.timestamp[taken],
        exit_ms=exit_ms,
        signal=decisions[taken].astype(np.int8),
        gross=gross,
        net=net,
        r=r,
    )
    signals = {int(c): int((decisions[signal_bars] == c).sum()) for c in (STOP, LONG, SUPERLONG)}
    kept = {int(c): int((decisions[taken] == c).sum()) for c in (STOP, LONG, SUPERLONG)}
    skipped = {c: signals[c] - kept[c] for c in signals}
    bar_returns, in_position = mark_to_market(bars, taken, exit_ms, side, net)
    return SymbolResult(trades, signals, skipped, bar_returns, in_position)


def mark_to_market(
    bars: SymbolBars,
    entry_bar: np.ndarray,
    exit_ms: np.ndarray,
    side: np.ndarray,
    net: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Bar returns of the sub-account: inside a trade, the position's value moves with
    the close (1 + side (close / entry - 1)); on its exit bar it becomes 1 + net, so
    the bars of a trade compound exactly to its net return. A trade exiting after the
    last bar is booked on the last bar. Returns (returns (n,), in_position (n,))."""
    n = len(bars)
    returns = np.zeros(n)
    held = np.zeros(n, bool)
    if entry_bar.size == 0:
        return returns, held
    exit_bar = np.searchsorted(bars.timestamp, exit_ms, side="left")
    exit_bar = np.clip(np.maximum(exit_bar, entry_bar), 0, n - 1)
    lengths = exit_bar - entry_bar  # bars after the entry, up to the exit bar
    trade = np.repeat(np.arange(entry_bar.size), lengths)
    offset = np.arange(trade.size) - np.repeat(np.cumsum(lengths) - lengths, lengths) + 1
    bar = entry_bar[trade] + offset
    value = 1.0 + side[trade] * (bars.close[bar] / bars.close[entry_bar[trade]] - 1.0)
    last = offset == lengths[trade]
    value[last] = 1.0 + net[trade[last]]
    previous = np.ones_like(value)  # the position's value one bar earlier
    inside = np.flatnonzero(offset > 1)
    previous[inside] = value[inside - 1]
    returns[bar] = value / previous - 1.0
    held[bar[~last]] = True
    held[entry_bar[lengths > 0]] = True
    # A trade whose horizon held no bar (lengths 0) returns its net on its entry bar.
    flat = lengths == 0
    returns[entry_bar[flat]] += net[flat]
    return returns, held
