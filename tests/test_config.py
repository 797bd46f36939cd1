"""Config: defaults, presets, TOML and flag overrides, and rejection of bad values."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from src.config import Config, TrainConfig, apply_overrides, build_config, to_toml
from src.core.errors import UserError
from src.modelling.training.cli import SECTIONS, build_parser, config_from_args


def parse(*argv: str) -> Config:
    return config_from_args(build_parser().parse_args(list(argv)))


def test_presets_hold_the_documented_values():
    quick = build_config("quick")
    assert (quick.train.epochs, quick.train.lr, quick.train.weight_decay) == (1, 1e-3, 1e-4)
    life = build_config("lifecycle").train
    assert (life.epochs, life.lr, life.weight_decay) == (15, 1e-4, 1e-5)
    assert (life.batch_size, life.accumulation_steps, life.effective_batch) == (3, 5, 15)
    assert life.early_stopping_patience == 3
    assert life.class_weights == (1.0, 10.0, 10.0, 20.0)


def test_toml_then_flags_override_the_preset(tmp_path):
    toml = tmp_path / "run.toml"
    toml.write_text("[train]\nlr = 0.01\nepochs = 4\n[model]\nd_model = 64\nn_heads = 8\n")
    cfg = parse("--preset", "lifecycle", "--config", str(toml), "--epochs", "2")
    assert (cfg.train.lr, cfg.train.epochs, cfg.model.d_model) == (0.01, 2, 64)
    assert cfg.train.batch_size == 3  # untouched preset value
    cfg = parse("--set", "train.class_weights=1,2,3,4", "--set", "track.tensorboard=true")
    assert cfg.train.class_weights == (1.0, 2.0, 3.0, 4.0) and cfg.track.tensorboard


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--epochs", "0"], "--epochs: train.epochs must be > 0"),
        (["--lr", "abc"], "--lr: train.lr expects float"),
        (["--precision", "fp8"], "--precision: train.precision must be one of"),
        (["--set", "train.lrr=1"], "unknown setting train.lrr"),
        (["--set", "bogus.x=1"], "unknown section [bogus]"),
        (["--set", "nokey"], "--set expects SECTION.KEY=VALUE"),
        (["--set", "model.n_heads=3"], "must divide model.d_model"),
    ],
)
def test_bad_values_name_the_flag_or_key(argv, message):
    with pytest.raises(UserError) as err:
        parse(*argv)
    assert message in str(err.value)


def test_unknown_toml_key_names_the_file(tmp_path):
    toml = tmp_path / "bad.toml"
    toml.write_text("[train]\nbatchsize = 3\n")
    with pytest.raises(UserError, match=r"bad.toml: unknown setting train.batchsize"):
        parse("--config", str(toml))


def test_dataclasses_are_keyword_only_and_validate():
    with pytest.raises(TypeError):
        TrainConfig(3)  # type: ignore[misc]
    with pytest.raises(ValueError, match="class_weights"):
        TrainConfig(class_weights=(1.0, 2.0))


def test_resolved_config_round_trips_through_toml(tmp_path):
    cfg = build_config("lifecycle")
    path = tmp_path / "resolved.toml"
    path.write_text(to_toml(cfg))
    assert parse("--preset", "quick", "--config", str(path)).to_dict() == cfg.to_dict()


def test_every_setting_round_trips_through_toml(tmp_path):
    """Backslashes, quotes, non-ASCII, None over a non-None default, in every section that
    train sets (the labels are the lake's: tests/test_label_truth.py)."""
    cfg = apply_overrides(
        Config(),
        {
            "paths": {"raw_dir": r"C:\data\raw", "checkpoint": 'runs/"best" ü.pth'},
            "data": {"val_start": "2024-02-01", "test_start": None, "seq_len": 16},
            "model": {"encoder": "cnn", "dropout": 0.0},
            "train": {"checkpoint_every_windows": None, "early_stopping_patience": 4},
            "track": {"mlflow_experiment": 'ex\\péri"ment', "tensorboard": True},
        },
        "test",
    )
    assert cfg.train.checkpoint_every_windows is None  # the default is 500
    path = tmp_path / "resolved.toml"
    path.write_text(to_toml(cfg), encoding="utf-8")
    again = parse("--config", str(path))
    assert again == cfg
    assert again.paths.raw_dir == Path(r"C:\data\raw")
    assert again.track.mlflow_experiment == 'ex\\péri"ment'


def test_every_field_of_the_train_sections_has_a_flag_with_its_docstring():
    parser = build_parser()
    help_text = " ".join(parser.format_help().split())
    cfg = Config()
    for section in SECTIONS:
        for f in dataclasses.fields(getattr(cfg, section)):
            flag = "--" + f.name.replace("_", "-")
            assert flag in parser._option_string_actions, flag
    assert "AdamW learning rate. (default: 0.001)" in help_text
    assert "--tensorboard, --no-tensorboard" in help_text
    assert parse("--no-tensorboard").track.tensorboard is False
    assert parse("--checkpoint-every-windows", "none").train.checkpoint_every_windows is None


@pytest.mark.parametrize(
    "value, expected",
    [
        ("balanced", "balanced"),
        ("Balanced", "balanced"),
        ("1,10,10,20", (1.0, 10.0, 10.0, 20.0)),
        ("1, 2.5, 3, 4", (1.0, 2.5, 3.0, 4.0)),
    ],
)
def test_class_weights_take_numbers_or_balanced_from_flag_set_and_toml(tmp_path, value, expected):
    assert parse("--class-weights", value).train.class_weights == expected
    assert parse("--set", f"train.class_weights={value}").train.class_weights == expected
    toml = tmp_path / "run.toml"
    as_toml = f'"{value}"' if expected == "balanced" else f"[{value}]"
    toml.write_text(f"[train]\nclass_weights = {as_toml}\n")
    cfg = parse("--config", str(toml))
    assert cfg.train.class_weights == expected
    again = tmp_path / "again.toml"
    again.write_text(to_toml(cfg))  # and back: "balanced" stays the word
    assert parse("--config", str(again)).train.class_weights == expected


@pytest.mark.parametrize("value", ["balance", "1,2,3", "1,2,3,0", "1,2,x,4", "nan,1,1,1"])
def test_bad_class_weights_name_the_flag_and_both_spellings(value):
    with pytest.raises(UserError) as err:
        parse("--class-weights", value)
    message = str(err.value)
    assert message.startswith("--class-weights: train.class_weights must be 4 positive numbers")
    assert "or balanced" in message
