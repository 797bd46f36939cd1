"""One source of truth for labels: `saimp prepare` makes them, train and tune only read them.

`--set label.*`, a `[label]` table that changes them and a search space naming them are
refused with a pointer to prepare; a run's header, sidecar and resume fingerprint carry
the lake's labels, and `saimp evaluate` refuses a lake whose bar interval, labels or
features are not the checkpoint's.

`rewrite_lake` (a copy of a lake with other metadata, labels or feature names) is shared
with tests/test_class_weights.py and tests/test_evaluate.py.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from src.config import (
    Config,
    DataConfig,
    LabelConfig,
    ModelConfig,
    PathsConfig,
    TrackConfig,
    TrainConfig,
)
from src.core import constants as C
from src.core.errors import UserError
from src.modelling.checkpointing.fingerprint import label_fingerprint
from src.modelling.checkpointing.last import last_path_for, load_training_state
from src.modelling.checkpointing.sidecar import comparable_part, lake_mismatch
from src.modelling.labels import config_toml, label_config
from src.modelling.training.cli import build_parser, config_from_args
from src.modelling.training.distributed import World
from src.modelling.training.run import run_training
from src.modelling.tuning.space import load_space
from tests.test_train_cli import run_train

VOLATILITY = {
    "horizon_minutes": 90,
    "barriers": "volatility",
    "vol_window": 50,
    "upper1_mult": 1.5,
    "upper2_mult": 3.0,
    "lower_mult": 1.25,
}


def rewrite_lake(
    src: Path,
    dst: Path,
    *,
    meta: Callable[[dict], dict] | None = None,
    labels: Callable[[np.ndarray], np.ndarray] | None = None,
    rename: dict[str, str] | None = None,
) -> Path:
    """Copy the lake `src` to `dst`, with each file's `saimp` metadata passed through
    `meta`, its label column through `labels`, and feature columns renamed (`rename`,
    in the metadata's feature list too); row groups keep their size."""
    dst.mkdir(parents=True)
    for path in sorted(src.glob("*.parquet")):
        pf = pq.ParquetFile(path)
        rows = pf.metadata.row_group(0).num_rows
        table = pf.read()
        info = json.loads(table.schema.metadata[C.PARQUET_META_KEY])
        if labels is not None:
            column = table.column_names.index(C.LABEL_COL)
            new = labels(table.column(C.LABEL_COL).to_numpy()).astype(np.int8)
            table = table.set_column(column, C.LABEL_COL, pa.array(new, pa.int8()))
        if rename:
            table = table.rename_columns([rename.get(n, n) for n in table.column_names])
            info["features"] = [rename.get(n, n) for n in info["features"]]
        if meta is not None:
            info = meta(info)
        table = table.replace_schema_metadata({C.PARQUET_META_KEY: json.dumps(info).encode()})
        pq.write_table(table, dst / path.name, row_group_size=rows)
    return dst


def with_label(label: dict) -> Callable[[dict], dict]:
    return lambda info: {**info, "label": dict(label)}


def tiny_config(tmp_path: Path, lake: Path, **train: object) -> Config:
    """A run of one epoch of a tiny model on `lake`, writing under `tmp_path`."""
    return Config(
        paths=PathsConfig(
            data_dir=lake,
            checkpoint=tmp_path / "data" / "best.pth",
            logs_dir=tmp_path / "logs",
            runs_dir=tmp_path / "runs",
        ),
        data=DataConfig(seq_len=8),
        model=ModelConfig(d_model=8, n_heads=2, n_layers=1, d_ff=16, dropout=0.0),
        train=TrainConfig(
            **{
                "batch_size": 128,
                "precision": "fp32",
                "checkpoint_every_windows": None,
                "log_every": 10_000,
                "threads": 1,
                **train,
            }
        ),
        track=TrackConfig(progress="lines"),
    )


def train_tiny(tmp_path: Path, lake: Path, **train: object) -> dict:
    """Run `run_training` in this process; the sidecar of its best checkpoint."""
    result = run_training(tiny_config(tmp_path, lake, **train), World(), torch.device("cpu"))
    return json.loads(result.best_checkpoint.with_suffix(".json").read_text())


def parse(*argv: str) -> Config:
    return config_from_args(build_parser().parse_args(list(argv)))


# -- train and tune refuse label settings ---------------------------------------------------


def test_set_label_is_one_line_pointing_to_prepare_and_exit_2(tmp_path):
    result = run_train("--set", "label.upper1_pct=1.2", cwd=tmp_path)
    assert result.returncode == 2
    [line] = result.stderr.strip().splitlines()
    assert line == (
        "error: --set label.upper1_pct: labels are made by saimp prepare (saimp prepare "
        "--upper1-pct 1.2 ...); train reads them from the lake"
    )
    assert not (tmp_path / "logs").exists()  # refused before any work


def test_a_label_table_that_changes_the_labels_is_refused(tmp_path):
    toml = tmp_path / "run.toml"
    toml.write_text("[train]\nlr = 0.01\n[label]\nhorizon_minutes = 120\nbarriers = 'volatility'\n")
    with pytest.raises(UserError) as err:
        parse("--config", str(toml))
    assert str(err.value).startswith(
        f"--config {toml}: label.barriers: labels are made by saimp prepare (saimp prepare "
        "--barriers volatility ...)"
    )
    # A [label] table that holds the defaults (older resolved configs, best.toml) is read.
    toml.write_text("[train]\nlr = 0.01\n[label]\nhorizon_minutes = 120\nupper1_pct = 0.8\n")
    assert parse("--config", str(toml)).train.lr == 0.01


def test_a_search_space_naming_a_label_setting_is_refused(tmp_path):
    space = tmp_path / "space.toml"
    space.write_text(
        "[train.lr]\nlow = 1e-4\nhigh = 1e-2\n[label.upper1_pct]\nlow = 0.5\nhigh = 2\n"
    )
    with pytest.raises(UserError) as err:
        load_space(space, Config())
    assert str(err.value).startswith(
        f"--space {space}: [label.upper1_pct]: labels are made by saimp prepare (saimp prepare "
        "--upper1-pct VALUE ...)"
    )


def test_the_resolved_config_shows_the_lake_labels_and_still_reads_back(tmp_path):
    cfg = Config(label=LabelConfig(**VOLATILITY), train=TrainConfig(lr=0.02))
    text = config_toml(cfg)
    assert '# barriers = "volatility"' in text and "# vol_window = 50" in text
    path = tmp_path / "resolved.toml"
    path.write_text(text)
    again = parse("--config", str(path))
    assert again.train == cfg.train and again.label == LabelConfig()  # labels: the lake's


# -- the lake's labels are the run's ----------------------------------------------------------


def test_old_label_records_take_defaults_and_unknown_keys_are_named():
    old = {"horizon_minutes": 60, "upper1_pct": 1.0, "upper2_pct": 2.0, "lower_pct": 0.5}
    assert label_config(old, "x").to_meta() == {**old, "barriers": "fixed"}
    assert label_config({}, "x") == LabelConfig()
    with pytest.raises(UserError, match=r"^--data-dir L: the lake's label settings spread"):
        label_config({"spread": 1}, "--data-dir L")
    # A state written before `barriers` existed still resumes (same fingerprint).
    saved = {f"label.{k}": v for k, v in old.items()}
    assert label_fingerprint(LabelConfig(**old)) == saved


def test_a_run_records_the_lake_labels_not_the_defaults(tmp_path, tiny_lake, caplog):
    lake = rewrite_lake(tiny_lake, tmp_path / "lake", meta=with_label(VOLATILITY))
    caplog.set_level("INFO", logger="src")
    sidecar = train_tiny(tmp_path, lake)
    assert sidecar["label"] == VOLATILITY  # as the lake's metadata records it
    assert sidecar["config"]["label"] == {**dataclasses.asdict(LabelConfig()), **VOLATILITY}
    header = caplog.text
    assert '# barriers = "volatility"' in header and "# upper1_mult = 1.5" in header
    assert "# upper1_pct" not in header  # defaults the lake did not use are not shown
    # The default weights fit the default synthetic data's mix: no warning.
    assert "do not fit" not in header and "[WEIGHTS]   Neutro" in header
    # The sidecar compares with another of the same lake, not with a default-label one.
    default_label = {**sidecar, "label": LabelConfig().to_meta()}
    assert comparable_part(sidecar) != comparable_part(default_label)
    # The resumable state's fingerprint holds the lake's labels too.
    state, _ = load_training_state(last_path_for(tmp_path / "data" / "best.pth"))
    label_keys = {k: v for k, v in state["fingerprint"].items() if k.startswith("label.")}
    assert label_keys == {f"label.{k}": v for k, v in VOLATILITY.items()}


# -- evaluate refuses a lake that is not the checkpoint's ------------------------------------


def fake_index(**over: object) -> SimpleNamespace:
    base = {
        "data_dir": Path("data/x"),
        "bar_ms": 60_000,
        "feature_names": ["a", "b", "c"],
        "meta": {"label": LabelConfig().to_meta()},
    }
    return SimpleNamespace(**{**base, **over})


SIDECAR = {"bar_ms": 60_000, "features": ["a", "b", "c"], "label": LabelConfig().to_meta()}


@pytest.mark.parametrize(
    "index, sidecar, needle",
    [
        (fake_index(), SIDECAR, None),
        (
            fake_index(bar_ms=900_000),
            SIDECAR,
            "its bar interval differs from the checkpoint's (lake vs checkpoint: "
            "bar_ms 900000 vs 60000)",
        ),
        (
            fake_index(meta={"label": {**LabelConfig().to_meta(), "upper1_pct": 1.2}}),
            SIDECAR,
            "its labels differ from the checkpoint's (lake vs checkpoint: "
            "label.upper1_pct 1.2 vs 0.8)",
        ),
        (
            fake_index(feature_names=["a", "b", "d"]),
            SIDECAR,
            "its features differ from the checkpoint's (lake lacks c; lake has d besides)",
        ),
        (fake_index(feature_names=["b", "a", "c"]), SIDECAR, "same features in another order"),
        # A lake recorded before `barriers` existed is the same fixed-barrier lake.
        (fake_index(meta={"label": {"horizon_minutes": 120}}), SIDECAR, None),
        # An older sidecar holds no lake labels: only what it records is compared.
        (fake_index(meta={"label": VOLATILITY}), {**SIDECAR, "label": None}, None),
    ],
)
def test_lake_mismatch_names_the_difference(index, sidecar, needle):
    message = lake_mismatch(sidecar, index)
    if needle is None:
        assert message is None
        return
    assert message.startswith("--data-dir data/x: ") and needle in message
    assert message.endswith("evaluate on a lake prepared with the checkpoint's settings")
