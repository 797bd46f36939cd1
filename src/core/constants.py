"""Names and fixed values shared across the project. No logic beyond picking the device."""

from pathlib import Path
from typing import Any


def __getattr__(name: str) -> Any:
    # `DEVICE` (the device a single process trains on when none is given) is resolved on
    # first use, so the data command-line tools start without importing torch.
    if name == "DEVICE":
        import torch

        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


#: Class index -> name. The order is the label encoding written by `prepare`.
CLASS_NAMES: tuple[str, ...] = ("Neutro", "Stop", "Long", "SuperLong")
NUM_CLASSES: int = len(CLASS_NAMES)

#: Default locations, relative to the directory the run starts in (the repository root).
DATA_DIR = Path("data")
DEFAULT_RAW_DIR = DATA_DIR / "raw" / "synthetic"
DEFAULT_PROCESSED_DIR = DATA_DIR / "processed"
DEFAULT_CHECKPOINT = DATA_DIR / "saimp_best.pth"
DEFAULT_LOGS_DIR = Path("logs")
DEFAULT_RUNS_DIR = Path("runs")

#: Column names of the raw candle contract (docs/design.md, "Data contract").
RAW_REQUIRED_COLUMNS: tuple[str, ...] = ("timestamp", "open", "high", "low", "close", "volume")
RAW_OPTIONAL_COLUMNS: tuple[str, ...] = ("taker_buy_volume", "symbol")

#: Column names of the processed lake besides the feature columns.
TIMESTAMP_COL = "timestamp"
LABEL_COL = "label"
HORIZON_END_COL = "horizon_end"
SYMBOL_COL = "symbol"
CLOSE_COL = "close"
#: Per trade the labels' barriers define (long, superlong, short): its exit time, gross
#: return and risk (the stop's distance, a fraction of the entry), for the backtest
#: (`src.data.labels.barrier_trades`).
TRADE_NAMES: tuple[str, ...] = ("long", "superlong", "short")
TRADE_COLUMNS: tuple[str, ...] = tuple(
    f"{t}_{what}" for t in TRADE_NAMES for what in ("exit", "return", "risk")
)
NON_FEATURE_COLUMNS: tuple[str, ...] = (
    TIMESTAMP_COL,
    LABEL_COL,
    HORIZON_END_COL,
    SYMBOL_COL,
    CLOSE_COL,
    *TRADE_COLUMNS,
)

#: Key of the Parquet key-value metadata where `prepare` records feature names and settings.
PARQUET_META_KEY = b"saimp"

#: Name of the manifest `prepare` writes beside the processed files.
MANIFEST_NAME = "manifest.json"
