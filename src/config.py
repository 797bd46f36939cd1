"""Every setting of a run, with its default, in one place.

Settings are keyword-only dataclasses grouped by concern; each checks its values in
`__post_init__` and raises `ValueError` naming the field. A run's config is built from
a preset, then an optional TOML file, then command-line flags (see `apply_overrides`);
unknown keys are rejected, never ignored.
"""

from __future__ import annotations

import dataclasses
import math
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args, get_origin, get_type_hints

from src.core import constants as C

Precision = Literal["auto", "fp32", "bf16", "fp16"]
SelectMetric = Literal["val_loss", "val_macro_f1"]
Barriers = Literal["fixed", "volatility"]

NONE_TEXT = "none"
"""How TOML files and flags spell None (TOML has no null)."""

# The names the original code used for the two most-tuned settings.
BATCH_SIZE = 64
ACCUMULATION_STEPS = 1


def _positive(name: str, value: float) -> None:
    if not value > 0:
        raise ValueError(f"{name} must be > 0, got {value!r}")


def _fraction(name: str, value: float) -> None:
    if not 0.0 <= value < 1.0:
        raise ValueError(f"{name} must be in [0, 1), got {value!r}")


@dataclass(kw_only=True)
class PathsConfig:
    raw_dir: Path = C.DEFAULT_RAW_DIR
    """Raw candle Parquet; the synthetic default data is generated here when missing."""
    data_dir: Path = C.DEFAULT_PROCESSED_DIR
    """Processed Parquet lake (output of `saimp prepare`)."""
    checkpoint: Path = C.DEFAULT_CHECKPOINT
    """Best model `state_dict`; its JSON sidecar sits beside it with suffix `.json`."""
    logs_dir: Path = C.DEFAULT_LOGS_DIR
    """Where `train_run_{YYYYMMDD_HHMMSS}.txt/.png/.jsonl` are written."""
    runs_dir: Path = C.DEFAULT_RUNS_DIR
    """Each run keeps its own best model in `{runs_dir}/{run name}/best.pth` (+ `.json`)."""

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            setattr(self, f.name, Path(getattr(self, f.name)))


@dataclass(kw_only=True)
class LabelConfig:
    horizon_minutes: int = 120
    """Label horizon: the vertical barrier sits this many minutes after the bar, in time
    (bars missing inside it are a gap, never stretched over)."""
    barriers: Barriers = "fixed"
    """fixed: the barriers are the *_pct percentages of the close; volatility: multiples
    (*_mult) of the bar's causal volatility over the horizon (AFML's daily-vol barriers)."""
    upper1_pct: float = 0.8
    """First upper barrier, percent above the close (touch -> Long)."""
    upper2_pct: float = 1.6
    """Second upper barrier, percent above the close (touch before the stop -> SuperLong)."""
    lower_pct: float = 0.75
    """Lower barrier, percent below the close (touch first, or in the same bar -> Stop)."""
    vol_window: int = 100
    """Volatility barriers: trailing bars of the 1-bar log-return volatility estimate."""
    upper1_mult: float = 1.0
    """Volatility barriers: first upper barrier in horizon volatilities above the close."""
    upper2_mult: float = 2.0
    """Volatility barriers: second upper barrier in horizon volatilities above the close."""
    lower_mult: float = 1.0
    """Volatility barriers: lower barrier in horizon volatilities below the close."""

    def __post_init__(self) -> None:
        _positive("label.horizon_minutes", self.horizon_minutes)
        if self.barriers not in get_args(Barriers):
            raise ValueError(
                f"label.barriers must be one of {', '.join(get_args(Barriers))}, "
                f"got {self.barriers!r}"
            )
        for kind in ("pct", "mult"):
            _positive(f"label.upper1_{kind}", getattr(self, f"upper1_{kind}"))
            _positive(f"label.lower_{kind}", getattr(self, f"lower_{kind}"))
            up1, up2 = getattr(self, f"upper1_{kind}"), getattr(self, f"upper2_{kind}")
            if up2 <= up1:
                raise ValueError(
                    f"label.upper2_{kind} ({up2}) must be above label.upper1_{kind} ({up1})"
                )
        if self.vol_window < 2:
            raise ValueError(f"label.vol_window must be >= 2 bars, got {self.vol_window}")

    def to_meta(self) -> dict[str, Any]:
        """The settings that define the labels, as the lake's metadata records them
        (the percentages for fixed barriers, the multiples and window for volatility)."""
        keys = ("upper1_pct", "upper2_pct", "lower_pct")
        if self.barriers == "volatility":
            keys = ("vol_window", "upper1_mult", "upper2_mult", "lower_mult")
        return {
            "horizon_minutes": self.horizon_minutes,
            "barriers": self.barriers,
            **{k: getattr(self, k) for k in keys},
        }


@dataclass(kw_only=True)
class DataConfig:
    seq_len: int = 32
    """Bars per window; the window's label is the label of its last bar."""
    bar_minutes: int = 1
    """Bar interval of the synthetic default data (1 or 15)."""
    synthetic_bars: int = 200_000
    """Bars the synthetic default dataset holds."""
    synthetic_seed: int = 7
    """Seed of the synthetic default dataset."""
    val_fraction: float = 0.15
    """Share of the time range used for validation (after train, before test)."""
    test_fraction: float = 0.15
    """Share of the time range held out for the final test report."""
    val_start: str | None = None
    """ISO date where validation starts; overrides `val_fraction` when set."""
    test_start: str | None = None
    """ISO date where test starts; overrides `test_fraction` when set."""
    embargo_minutes: int = 0
    """Windows whose last bar lies within this many minutes after a split boundary belong to
    no split: a gap between train, validation and test (Lopez de Prado's embargo)."""
    train_start: str | None = None
    """ISO date where training starts; windows before it belong to no split (rolling
    walk-forward); fractions are then of the time from it."""
    max_gap_bars: float = 1.5
    """A window never spans two consecutive bars further apart than this many bar intervals."""
    row_group_rows: int = 8192
    """Rows per Parquet row group written by `prepare` (the streaming work unit)."""
    units_in_flight: int = 4
    """Row groups a loader worker holds at once; windows are shuffled across them."""
    num_workers: int = 0
    """DataLoader worker processes per rank (0 reads in the training process)."""
    prefetch_factor: int = 2
    """Batches each worker prepares ahead (only with num_workers > 0)."""

    def __post_init__(self) -> None:
        if self.seq_len < 1:
            raise ValueError(f"data.seq_len must be >= 1, got {self.seq_len}")
        if self.bar_minutes not in (1, 15):
            raise ValueError(f"data.bar_minutes must be 1 or 15, got {self.bar_minutes}")
        _positive("data.synthetic_bars", self.synthetic_bars)
        _fraction("data.val_fraction", self.val_fraction)
        _fraction("data.test_fraction", self.test_fraction)
        if self.val_fraction + self.test_fraction >= 1.0:
            raise ValueError("data.val_fraction + data.test_fraction must leave time for training")
        if self.embargo_minutes < 0:
            raise ValueError(f"data.embargo_minutes must be >= 0, got {self.embargo_minutes}")
        if self.max_gap_bars < 1:
            raise ValueError(f"data.max_gap_bars must be >= 1, got {self.max_gap_bars}")
        _positive("data.row_group_rows", self.row_group_rows)
        _positive("data.units_in_flight", self.units_in_flight)
        if self.num_workers < 0:
            raise ValueError(f"data.num_workers must be >= 0, got {self.num_workers}")
        _positive("data.prefetch_factor", self.prefetch_factor)


@dataclass(kw_only=True)
class ModelConfig:
    d_model: int = 32
    """Width of the per-bar embedding and of the Transformer."""
    n_heads: int = 4
    """Attention heads; must divide d_model."""
    n_layers: int = 2
    """Transformer encoder layers."""
    d_ff: int = 64
    """Hidden width of each Transformer feed-forward block."""
    dropout: float = 0.1
    """Dropout inside the Transformer and the head."""
    encoder: Literal["linear", "cnn"] = "linear"
    """Per-bar encoder: a linear projection, or a 1-D CNN over price levels."""
    levels: int = 1
    """With encoder="cnn": features are laid out as channels x levels."""

    def __post_init__(self) -> None:
        for name in ("d_model", "n_heads", "n_layers", "d_ff", "levels"):
            _positive(f"model.{name}", getattr(self, name))
        if self.d_model % self.n_heads:
            raise ValueError(
                f"model.n_heads ({self.n_heads}) must divide model.d_model ({self.d_model})"
            )
        _fraction("model.dropout", self.dropout)
        if self.encoder not in ("linear", "cnn"):
            raise ValueError(f"model.encoder must be 'linear' or 'cnn', got {self.encoder!r}")


CLASS_WEIGHTS_BALANCED = "balanced"
"""`train.class_weights` value: weights from the training split's class frequencies."""


@dataclass(kw_only=True)
class TrainConfig:
    epochs: int = 1
    """Passes over the training split."""
    batch_size: int = BATCH_SIZE
    """Physical (micro-)batch: what fits in memory at once."""
    accumulation_steps: int = ACCUMULATION_STEPS
    """Micro-batches per optimizer step; effective batch = batch_size x accumulation_steps."""
    lr: float = 1e-3
    """AdamW learning rate."""
    weight_decay: float = 1e-4
    """AdamW weight decay."""
    class_weights: tuple[float, ...] | str = (1.0, 10.0, 10.0, 20.0)
    """CrossEntropyLoss weights for Neutro, Stop, Long, SuperLong: four numbers, or
    "balanced" (inverse frequency in the training split: mean weight 1 per training
    window, 0 for a class the training split lacks)."""
    label_smoothing: float = 0.0
    """CrossEntropyLoss label smoothing (0: none)."""
    precision: Precision = "auto"
    """Autocast: bf16 (no scaler), fp16 (GradScaler), fp32, or auto (best the device has)."""
    early_stopping_patience: int | None = None
    """Stop after this many epochs without improvement (None: never)."""
    plateau_patience: int = 1
    """ReduceLROnPlateau: epochs without improvement before the LR is cut."""
    plateau_factor: float = 0.5
    """ReduceLROnPlateau: factor the LR is multiplied by."""
    max_grad_norm: float | None = None
    """Clip the global gradient norm to this (after unscaling); None: no clipping."""
    max_nonfinite_windows: int = 5
    """Stop the run after this many consecutive windows with a non-finite loss."""
    select_metric: SelectMetric = "val_loss"
    """What makes a checkpoint the best: lowest val_loss (the original design) or highest
    val_macro_f1."""
    micro_batch: str = "auto"
    """Samples per forward pass: "auto" (the whole accumulation window where memory allows;
    the gradient is the same), "loader" (the loader's batches as they come), or a number."""
    checkpoint_every_windows: int | None = 500
    """Write the resumable `last` checkpoint every this many windows (and every epoch)."""
    log_every: int = 100
    """Print a batch line every this many micro-batches (plain output)."""
    seed: int = 0
    """Seed for model init and data shuffling."""
    threads: int | None = None
    """CPU threads for torch (None: the CPUs of this process divided by the processes that
    share them, or OMP_NUM_THREADS when set)."""
    replace_best: bool = False
    """Replace the best checkpoint at `paths.checkpoint` even when it is better than this
    run's or came from other data, labels or model shape (default: keep it)."""

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "accumulation_steps", "lr", "log_every"):
            _positive(f"train.{name}", getattr(self, name))
        if self.weight_decay < 0:
            raise ValueError(f"train.weight_decay must be >= 0, got {self.weight_decay}")
        _fraction("train.label_smoothing", self.label_smoothing)
        self.class_weights = self._checked_class_weights(self.class_weights)
        if self.precision not in get_args(Precision):
            raise ValueError(
                f"train.precision must be one of {', '.join(get_args(Precision))}, "
                f"got {self.precision!r}"
            )
        if self.early_stopping_patience is not None:
            _positive("train.early_stopping_patience", self.early_stopping_patience)
        if self.max_grad_norm is not None:
            _positive("train.max_grad_norm", self.max_grad_norm)
        _positive("train.max_nonfinite_windows", self.max_nonfinite_windows)
        if not 0 < self.plateau_factor < 1:
            raise ValueError(f"train.plateau_factor must be in (0, 1), got {self.plateau_factor}")
        if self.micro_batch not in ("auto", "loader") and not (
            str(self.micro_batch).isdigit() and int(self.micro_batch) > 0
        ):
            raise ValueError(
                f"train.micro_batch must be auto, loader or a positive number, "
                f"got {self.micro_batch!r}"
            )
        self.micro_batch = str(self.micro_batch)
        if self.checkpoint_every_windows is not None:
            _positive("train.checkpoint_every_windows", self.checkpoint_every_windows)
        if self.threads is not None:
            _positive("train.threads", self.threads)
        if self.select_metric not in get_args(SelectMetric):
            raise ValueError(
                f"train.select_metric must be one of {', '.join(get_args(SelectMetric))}, "
                f"got {self.select_metric!r}"
            )

    @property
    def effective_batch(self) -> int:
        return self.batch_size * self.accumulation_steps

    @staticmethod
    def _checked_class_weights(value: Any) -> tuple[float, ...] | str:
        """The string "balanced", or the weights as a tuple of positive finite floats
        from a tuple, a TOML list or a flag's text ("1,10,10,20"); ValueError otherwise.

        The field's type is a union, so `_coerce` hands the value over as given and
        the parsing of both spellings lives here, in one place.
        """
        if isinstance(value, str) and value.strip().lower() == CLASS_WEIGHTS_BALANCED:
            return CLASS_WEIGHTS_BALANCED
        items = value.split(",") if isinstance(value, str) else value
        try:
            weights = tuple(float(w) for w in items)
        except (TypeError, ValueError):
            weights = ()
        n = len(C.CLASS_NAMES)
        if len(weights) != n or not all(math.isfinite(w) and w > 0 for w in weights):
            shown = list(value) if isinstance(value, tuple | list) else value
            raise ValueError(
                f"train.class_weights must be {n} positive numbers ({', '.join(C.CLASS_NAMES)}) "
                f"or {CLASS_WEIGHTS_BALANCED}, got {shown!r}"
            )
        return weights


@dataclass(kw_only=True)
class TrackConfig:
    progress: Literal["auto", "bar", "lines"] = "auto"
    """Progress display: a live bar on a terminal, plain lines otherwise ("auto")."""
    tensorboard: bool = False
    """Also write TensorBoard event files (needs the `tensorboard` extra)."""
    tensorboard_dir: Path = Path("runs")
    """Where TensorBoard runs go (one sub-directory per run)."""
    mlflow: bool = False
    """Also log params, metrics and the best checkpoint to MLflow (needs the `mlflow` extra)."""
    mlflow_tracking_uri: str = "mlruns"
    """MLflow tracking URI; a plain path is a local file store."""
    mlflow_experiment: str = "saimp"
    """MLflow experiment name."""

    def __post_init__(self) -> None:
        if self.progress not in ("auto", "bar", "lines"):
            raise ValueError(f"track.progress must be auto, bar or lines, got {self.progress!r}")
        self.tensorboard_dir = Path(self.tensorboard_dir)


@dataclass(kw_only=True)
class Config:
    paths: PathsConfig = field(default_factory=PathsConfig)
    label: LabelConfig = field(default_factory=LabelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    track: TrackConfig = field(default_factory=TrackConfig)

    def to_dict(self) -> dict[str, dict[str, Any]]:
        """Plain, JSON- and TOML-friendly values (paths as strings, tuples as lists)."""
        out: dict[str, dict[str, Any]] = {}
        for section in dataclasses.fields(self):
            values = dataclasses.asdict(getattr(self, section.name))
            out[section.name] = {
                k: str(v) if isinstance(v, Path) else list(v) if isinstance(v, tuple) else v
                for k, v in values.items()
            }
        return out


#: Presets: overrides applied to the defaults, section -> field -> value.
PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    # The direct-run defaults of the original `train.py` (docs/design.md, "Presets").
    "quick": {"train": {"epochs": 1, "lr": 1e-3, "weight_decay": 1e-4}},
    # The values of the original training lifecycle (docs/design.md, "Presets").
    "lifecycle": {
        "train": {
            "epochs": 15,
            "lr": 1e-4,
            "weight_decay": 1e-5,
            "batch_size": 3,
            "accumulation_steps": 5,
            "early_stopping_patience": 3,
        }
    },
}

#: Model sizes: a CPU-sized one (the default) and one sized for a 12 GB GPU (RTX 3060).
MODEL_SIZES: dict[str, dict[str, Any]] = {
    "cpu": {},
    "rtx3060": {"d_model": 256, "n_heads": 8, "n_layers": 6, "d_ff": 1024, "dropout": 0.1},
}


def _coerce(section: str, name: str, hint: Any, value: Any) -> Any:
    """Convert a TOML or command-line value to the field's declared type."""
    if get_origin(hint) is tuple:
        items = value.split(",") if isinstance(value, str) else list(value)
        try:
            return tuple(float(x) for x in items)
        except (TypeError, ValueError):
            raise ValueError(f"{section}.{name} expects numbers, got {value!r}") from None
    args = get_args(hint)
    optional = type(None) in args
    if optional and (value is None or (isinstance(value, str) and value.lower() == NONE_TEXT)):
        return None
    if value is None:
        raise ValueError(f"{section}.{name} cannot be empty")
    if get_origin(hint) is Literal or (args and all(isinstance(a, str) for a in args)):
        return str(value)
    base = next((a for a in args if a is not type(None)), hint) if args else hint
    if get_origin(base) is Literal:
        return str(value)
    if base is bool:
        text = str(value).lower()
        if text not in ("true", "false", "1", "0", "yes", "no", "on", "off"):
            raise ValueError(f"{section}.{name} expects true or false, got {value!r}")
        return text in ("true", "1", "yes", "on")
    if base in (int, float, str, Path):
        try:
            converted = base(value)
        except (TypeError, ValueError):
            raise ValueError(f"{section}.{name} expects {base.__name__}, got {value!r}") from None
        if base is int and isinstance(value, float) and not value.is_integer():
            raise ValueError(f"{section}.{name} expects an integer, got {value!r}")
        if base is float and not math.isfinite(converted):
            raise ValueError(f"{section}.{name} must be finite, got {value!r}")
        return converted
    return value


def apply_overrides(cfg: Config, overrides: dict[str, dict[str, Any]], source: str) -> Config:
    """Return a new Config with `overrides` (section -> field -> value) applied.

    Unknown sections or fields raise `ValueError` naming them and `source` (a file or
    "command line"), so a typo never silently does nothing.
    """
    sections = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg)}
    updated: dict[str, Any] = {}
    for section, values in overrides.items():
        if section not in sections:
            raise ValueError(f"{source}: unknown section [{section}]; known: {', '.join(sections)}")
        if not isinstance(values, dict):
            raise ValueError(f"{source}: [{section}] must be a table of settings")
        current = updated.get(section, sections[section])
        hints = get_type_hints(type(current))
        known = {f.name for f in dataclasses.fields(current)}
        changes = {}
        for name, value in values.items():
            if name not in known:
                raise ValueError(
                    f"{source}: unknown setting {section}.{name}; known: {', '.join(sorted(known))}"
                )
            changes[name] = _coerce(section, name, hints[name], value)
        updated[section] = dataclasses.replace(current, **changes)
    return dataclasses.replace(cfg, **updated)


def load_toml(path: Path) -> dict[str, dict[str, Any]]:
    """Read a TOML config file; its tables are sections (`[train]`, `[data]`, ...)."""
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ValueError(f"--config: file not found: {path}") from None
    except tomllib.TOMLDecodeError as err:
        raise ValueError(f"--config: {path} is not valid TOML: {err}") from None


def build_config(
    preset: str = "quick",
    model_size: str = "cpu",
    config_file: Path | None = None,
    overrides: dict[str, dict[str, Any]] | None = None,
) -> Config:
    """Defaults, then the preset and model size, then the TOML file, then flag overrides."""
    if preset not in PRESETS:
        raise ValueError(f"--preset: unknown preset {preset!r}; known: {', '.join(PRESETS)}")
    if model_size not in MODEL_SIZES:
        raise ValueError(
            f"--model-size: unknown size {model_size!r}; known: {', '.join(MODEL_SIZES)}"
        )
    cfg = apply_overrides(Config(), PRESETS[preset], f"preset {preset}")
    cfg = apply_overrides(cfg, {"model": MODEL_SIZES[model_size]}, f"model size {model_size}")
    if config_file is not None:
        cfg = apply_overrides(cfg, load_toml(config_file), str(config_file))
    if overrides:
        cfg = apply_overrides(cfg, overrides, "command line")
    return cfg


def to_toml(cfg: Config) -> str:
    """The resolved config as TOML text that `--config` reads back to the same Config.

    TOML has no null: a field set to None is written as the string "none", which every
    optional field reads as None (so an override to None survives the round trip).
    """
    import tomli_w

    tables = {
        section: {k: NONE_TEXT if v is None else v for k, v in values.items()}
        for section, values in cfg.to_dict().items()
    }
    return tomli_w.dumps(tables)
