"""Symbol and bar interval from a raw file's name (docs/design.md, "Data contract"); part
of reading raw candles (`raw_io`).

Symbols. A ``symbol`` column names each row's symbol as it is written. Without one, the
symbol is the file's stem before its *interval token*, upper-cased, separators kept; an
interval token is a ``-`` or ``_`` separated token like Binance's intervals (``1s``,
``1m``, ``15m``, ``4h``, ``1d``, ``1w``, and months ``1M`` / ``1mo``):
``BTCUSDT-1m-2024-01.zip`` -> ``BTCUSDT``, ``BTCUSD_PERP-1m-2024-01.zip`` ->
``BTCUSD_PERP``, ``BTCUSD_240329-1m-2024-02.zip`` -> ``BTCUSD_240329``. Without an
interval token it is the stem before the first date (a ``YYYY`` token followed by a
month token: ``synth_2024-01.parquet`` -> ``SYNTH``), else the whole stem (``SOL.csv``
-> ``SOL``). A name is never cut inside the symbol, so different contracts stay apart.

The interval token also names the bar interval (`interval_from_filename`); how it is
weighed against the timestamps is in `raw_grid`.
"""

from __future__ import annotations

import re
from pathlib import Path

RAW_SUFFIXES: tuple[str, ...] = (".parquet", ".csv", ".zip")

# File-name tokens: Binance intervals (m = minutes, M / mo = months), years, months.
_INTERVAL_TOKEN = re.compile(r"([1-9]\d*)(s|m|h|d|w|mo|M)")
_UNIT_MS = {"s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000}
_YEAR_TOKEN = re.compile(r"\d{4}")
_MONTH_TOKEN = re.compile(r"0[1-9]|1[0-2]")


def _stem(path: Path) -> str:
    """The file name without its raw-file suffixes (`X-1m.csv.zip` -> `X-1m`)."""
    stem = Path(path).name
    while (suffix := Path(stem).suffix) and suffix.lower() in RAW_SUFFIXES:
        stem = stem[: -len(suffix)]
    return stem


def _name_parts(path: Path) -> tuple[str, str | None]:
    """(the symbol part of the stem as written, the interval token or None)."""
    stem = _stem(path)
    parts = re.split(r"([-_])", stem)  # tokens at even positions, separators between
    tokens = parts[0::2]

    def before(k: int) -> str:
        return "".join(parts[: 2 * k - 1])

    for k in range(1, len(tokens)):
        if _INTERVAL_TOKEN.fullmatch(tokens[k]) and before(k).strip("-_"):
            return before(k), tokens[k]
    for k in range(1, len(tokens) - 1):
        if (
            _YEAR_TOKEN.fullmatch(tokens[k])
            and _MONTH_TOKEN.fullmatch(tokens[k + 1])
            and before(k).strip("-_")
        ):
            return before(k), None
    return stem, None


def symbol_from_filename(path: Path) -> str:
    """The symbol a file name gives (module docstring, "Symbols"), upper-cased.

    `BTCUSDT-1m-2024-01.zip` -> `BTCUSDT`, `BTCUSD_PERP-1m-2024-01.zip` -> `BTCUSD_PERP`,
    `synth_2024-01.parquet` -> `SYNTH`, `SOL.csv` -> `SOL`.
    """
    return _name_parts(path)[0].upper()


def interval_from_filename(path: Path) -> int | None:
    """The bar interval a file name names, in milliseconds (`X-15m-2024-01.zip` ->
    900000); None without an interval token, or for months (`1M`, `1mo`), which have
    no fixed length."""
    token = _name_parts(path)[1]
    if token is None:
        return None
    match = _INTERVAL_TOKEN.fullmatch(token)
    assert match is not None
    unit = _UNIT_MS.get(match.group(2))
    return None if unit is None else int(match.group(1)) * unit


__all__ = ["RAW_SUFFIXES", "interval_from_filename", "symbol_from_filename"]
