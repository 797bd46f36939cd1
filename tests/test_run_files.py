"""The run's files: the text log (a logging file handler), the JSONL records and the PNG
drawn from them, and the factory of a run's hooks."""

from __future__ import annotations

import json
import math
import sys

import pytest
import torch

from src.config import Config, PathsConfig, TrackConfig
from src.core.constants import CLASS_NAMES
from src.core.logs import FILE_ONLY, log_file, setup_console
from src.modelling.observability.console import ConsoleHooks
from src.modelling.observability.hooks import Hooks
from src.modelling.observability.metrics_file import EPOCH_KEYS, STEP_KEYS
from src.modelling.observability.plots import (
    draw_history,
    figure_data,
    plot_history,
    plotted_data,
    read_epoch_records,
)
from src.modelling.observability.plots import main as plots_main
from src.modelling.observability.progress import BarHooks
from src.modelling.observability.run_files import (
    RunFilesHooks,
    RunPaths,
    make_run_hooks,
)
from src.modelling.observability.trackers import MissingExtraError
from tests.helpers import WEIGHTS, fit, make_batches, tiny_model


def epoch_record(epoch: int, *, val_loss: float = 1.0, improved: bool = True) -> dict:
    """A record shaped like the loop's (see train.py), with made-up numbers."""
    return {
        "epoch": epoch,
        "train_loss": 1.5 - 0.1 * epoch,
        "train_acc": 0.3 + 0.05 * epoch,
        "val_loss": val_loss,
        "val_acc": 0.4,
        "val_macro_f1": 0.2 + 0.01 * epoch,
        "val_balanced_acc": 0.3,
        "val_recall": {name: 0.1 * (i + 1) for i, name in enumerate(CLASS_NAMES)},
        "val_confusion": [[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]],
        "lr": 1e-3,
        "next_lr": 5e-4,
        "optimizer_steps": 4 * epoch,
        "skipped_steps": 0,
        "nonfinite_windows": 0,
        "train_samples": 32,
        "seconds": 0.5,
        "improved": improved,
    }


def drive(
    logger: Hooks,
    epochs: int = 2,
    batches: int = 8,
    accumulation: int = 2,
    log_every: int = 2,
    val_batches: int = 3,
    checkpoint=None,
    records: list | None = None,
) -> None:
    """Call the hooks in the order train() does, with synthetic numbers; no model."""
    for epoch in range(1, epochs + 1):
        logger.epoch_start(epoch, epochs, batches)
        logger.phase_start("train", batches)
        for first in range(0, batches, accumulation):
            for b in range(first, first + accumulation):
                if b % log_every == 0:
                    logger.batch(epoch, b, 1.0 / (1 + b + 10 * epoch), 0.25, samples=4)
            logger.progress("train", first + accumulation, 4 * accumulation, loss=0.9, lr=0.01)
        logger.phase_start("val", val_batches)
        for i in range(val_batches):
            logger.progress("val", i + 1, 4)
        record = (records or [])[epoch - 1] if records else epoch_record(epoch)
        if checkpoint is not None and record["improved"]:
            logger.checkpoint_saved(checkpoint, record)
        logger.epoch_end(record)


def read_jsonl(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def make_cfg(tmp_path, **track) -> Config:
    return Config(paths=PathsConfig(logs_dir=tmp_path / "logs"), track=TrackConfig(**track))


# -- JSONL ----------------------------------------------------------------------------------


def test_jsonl_has_one_record_per_epoch_with_the_documented_keys(tmp_path):
    paths = RunPaths.in_dir(tmp_path, "x")
    records = [epoch_record(1), epoch_record(2, val_loss=math.nan, improved=False)]
    logger = RunFilesHooks(paths, torch.device("cpu"), console=Hooks())
    logger.log_params({"train": {"lr": 1e-3, "class_weights": [1.0, 2.0]}})
    drive(logger, records=records)
    logger.close()

    lines = read_jsonl(paths.jsonl)
    kinds = [r["kind"] for r in lines]
    assert kinds[0] == "params"
    assert lines[0]["params"] == {"train.lr": 1e-3, "train.class_weights": "1.0,2.0"}
    epochs = [r for r in lines if r["kind"] == "epoch"]
    steps = [r for r in lines if r["kind"] == "step"]
    assert [r["epoch"] for r in epochs] == [1, 2]
    for r in epochs:
        assert tuple(r) == EPOCH_KEYS
        assert r["samples_per_s"] > 0 and r["ram_gb"] > 0 and r["vram_gb"] is None
    assert epochs[1]["val_loss"] is None  # NaN -> null
    assert epochs[0]["val_recall"] == records[0]["val_recall"]
    assert epochs[0]["val_confusion"] == records[0]["val_confusion"]

    # 8 batches, a batch record every 2: 4 per epoch, in order, the global step running on.
    assert [(r["epoch"], r["batch"], r["step"]) for r in steps] == [
        (e, b, 8 * (e - 1) + b) for e in (1, 2) for b in (0, 2, 4, 6)
    ]
    for r in steps:
        assert tuple(r) == STEP_KEYS
        assert r["lr"] == 0.01  # from the window the batch belongs to
        assert r["samples_per_s"] > 0 and r["ram_gb"] > 0
        assert r["vram_gb"] is None and r["skipped_steps"] is None
    assert steps[0]["loss"] == pytest.approx(1 / 11)
    # Every epoch record follows its steps.
    assert kinds.index("epoch") > max(i for i, k in enumerate(kinds) if k == "step" and i < 6)


def test_the_png_is_drawn_from_the_jsonl(tmp_path):
    paths = RunPaths.in_dir(tmp_path, "x")
    logger = RunFilesHooks(paths, console=Hooks())
    drive(logger, epochs=3, records=[epoch_record(e, val_loss=1.0 / e) for e in (1, 2, 3)])
    logger.close()

    records = read_epoch_records(paths.jsonl)
    # What the figure draws is exactly the JSONL's numbers ...
    drawn = plotted_data(draw_history(records))
    raw = [json.loads(line) for line in paths.jsonl.read_text().splitlines()]
    raw = [r for r in raw if r["kind"] == "epoch"]
    assert drawn["val_loss"] == ([1.0, 2.0, 3.0], [r["val_loss"] for r in raw])
    assert drawn["train_acc"][1] == pytest.approx([100 * r["train_acc"] for r in raw])
    assert drawn["recall_Stop"][1] == [r["val_recall"]["Stop"] for r in raw]
    assert {k: v[1] for k, v in drawn.items()} == {
        k: v for k, v in figure_data(records).items() if k != "epoch"
    }
    # ... and redrawing from the JSONL alone gives the very same picture.
    again = tmp_path / "again.png"
    assert plots_main([str(paths.jsonl), str(again)]) == 0
    assert again.read_bytes() == paths.png.read_bytes()


def test_plot_draws_null_values_as_gaps(tmp_path):
    records = [epoch_record(1), {**epoch_record(2), "val_loss": None}]
    data = figure_data(records)
    assert math.isnan(data["val_loss"][1])
    assert plot_history(records, tmp_path / "p.png").stat().st_size > 0


def test_plots_cli_names_a_missing_file(tmp_path):
    from src.core.errors import UserError

    with pytest.raises(UserError, match="no such file"):
        plots_main([str(tmp_path / "nope.jsonl")])


def test_real_training_writes_real_records(tmp_path):
    batches = make_batches([[0, 1, 2, 3], [3, 2, 1, 0], [0, 0, 1, 1], [2, 2, 3, 3], [1, 2]], 1)
    paths = RunPaths.in_dir(tmp_path / "logs", "real")
    logger = make_run_hooks(make_cfg(tmp_path, progress="lines"), paths, torch.device("cpu"))
    model = tiny_model()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    try:
        state = fit(
            model,
            torch.nn.CrossEntropyLoss(weight=WEIGHTS),
            optimizer,
            None,
            batches,
            batches[:2],
            2,
            accumulation_steps=2,
            checkpoint=tmp_path / "best.pth",
            log_every=1,
            hooks=logger,
        ).state
    finally:
        logger.close()
    lines = read_jsonl(paths.jsonl)
    assert lines[0]["kind"] == "params" and lines[0]["params"]["track.progress"] == "lines"
    steps = [r for r in lines if r["kind"] == "step"]
    epochs = [r for r in lines if r["kind"] == "epoch"]
    # Which batches get a record is the loop's business (log_every, windows); the records
    # themselves must be complete and real.
    assert {r["epoch"] for r in steps} == {1, 2}
    assert [r["step"] for r in steps] == sorted(r["step"] for r in steps)
    assert all(set(STEP_KEYS) <= set(r) for r in steps)
    assert all(r["lr"] == pytest.approx(1e-3) and r["samples_per_s"] > 0 for r in steps)
    assert all(math.isfinite(r["loss"]) and 0 <= r["acc"] <= 1 for r in steps)
    assert [tuple(r) for r in epochs] == [EPOCH_KEYS, EPOCH_KEYS]
    for written, kept in zip(epochs, state.history, strict=True):
        assert {k: written[k] for k in kept} == json.loads(json.dumps(kept))  # exact floats
    assert epochs[0]["train_samples"] == 18
    assert paths.png.stat().st_size > 0


# -- the factory ---------------------------------------------------------------------------


def test_make_run_hooks_picks_lines_or_bar(tmp_path):
    cfg = make_cfg(tmp_path, progress="lines")
    lines = make_run_hooks(cfg, RunPaths.in_dir(tmp_path, "a"))
    bar = make_run_hooks(make_cfg(tmp_path, progress="bar"), RunPaths.in_dir(tmp_path, "b"))
    try:
        assert type(lines.console) is ConsoleHooks
        assert isinstance(bar.console, BarHooks)
    finally:
        lines.close()
        bar.close()
    other_rank = make_run_hooks(cfg, RunPaths.in_dir(tmp_path, "c"), is_main=False)
    assert type(other_rank) is Hooks
    assert not (tmp_path / "train_run_c.jsonl").exists()


def test_a_missing_extra_names_the_flag_and_creates_no_file(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    paths = RunPaths.in_dir(tmp_path, "x")
    with pytest.raises(MissingExtraError) as err:
        make_run_hooks(make_cfg(tmp_path, tensorboard=True), paths)
    assert "--tensorboard" in str(err.value)
    assert "pip install -e '.[tensorboard]'" in str(err.value)
    assert not paths.jsonl.exists()


def test_mlflow_missing_extra(tmp_path, monkeypatch):
    # Hide the submodules too: an earlier test may have imported them already.
    for name in ("mlflow", "mlflow.entities", "mlflow.exceptions", "mlflow.tracking"):
        monkeypatch.setitem(sys.modules, name, None)
    with pytest.raises(MissingExtraError, match=r"--mlflow .*pip install -e '\.\[mlflow\]'"):
        make_run_hooks(make_cfg(tmp_path, mlflow=True), RunPaths.in_dir(tmp_path, "x"))


# -- the text log -------------------------------------------------------------------------


def test_the_log_file_keeps_every_line_and_the_error_that_ended_the_run(tmp_path, capsys):
    import logging
    import warnings

    setup_console()
    log = logging.getLogger("src.test")
    path = tmp_path / "run.txt"
    with pytest.raises(ValueError), log_file(path):
        log.info("to stdout")
        log.warning("careful")
        log.info("only in the log", extra=FILE_ONLY)
        warnings.warn("a library warning", UserWarning, stacklevel=1)
        raise ValueError("the cause")
    log.info("after the run")  # the file handler is gone
    out, err = capsys.readouterr()
    assert out == "to stdout\nafter the run\n"
    assert err.startswith("warning: careful\nwarning: ") and "a library warning" in err
    text = path.read_text()
    assert text.startswith("to stdout\nwarning: careful\nonly in the log\nwarning: ")
    assert "a library warning" in text
    assert text.endswith("error: the cause\n") and "after the run" not in text


def test_other_ranks_print_only_warnings_with_their_rank(capsys):
    import logging

    setup_console(rank=1)
    logging.getLogger("src.test").info("epoch line")
    logging.getLogger("src.test").warning("disk almost full")
    out, err = capsys.readouterr()
    assert out == "" and err == "[rank 1] warning: disk almost full\n"


def test_setting_up_the_console_twice_prints_each_warning_once(capsys):
    import warnings

    setup_console()
    setup_console()  # run_cli, then the command's own main()
    warnings.warn("only once", UserWarning, stacklevel=1)
    assert capsys.readouterr().err.count("UserWarning: only once") == 1
