"""TensorBoard and MLflow receive the JSONL's numbers, the params and the best checkpoint.

Each tracker test writes a real run directory or store and reads it back with the
tracker's own reader; it is skipped when the tracker's extra is not installed.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from src.modelling.observability.hooks import Hooks
from src.modelling.observability.run_files import RunPaths, make_run_hooks
from src.modelling.observability.trackers import (
    flatten_params,
    resolve_tracking_uri,
    tracker_metrics,
)
from tests.test_run_files import drive, epoch_record, make_cfg, read_jsonl


def test_tracker_metrics_of_step_and_epoch_records():
    step = {
        "kind": "step",
        "epoch": 2,
        "batch": 4,
        "step": 12,
        "loss": 0.5,
        "acc": 0.25,
        "lr": 1e-3,
        "samples_per_s": 100.0,
        "ram_gb": 1.5,
        "vram_gb": None,
        "skipped_steps": 0,
        "time": 1.0,
    }
    assert tracker_metrics(step) == (
        12,
        {
            "step/loss": 0.5,
            "step/acc": 0.25,
            "step/lr": 1e-3,
            "step/samples_per_s": 100.0,
            "step/ram_gb": 1.5,
            "step/skipped_steps": 0.0,
        },
    )
    n, metrics = tracker_metrics({"kind": "epoch", **epoch_record(3), "val_loss": None})
    assert n == 3
    assert metrics["epoch/val_recall/SuperLong"] == pytest.approx(0.4)
    assert metrics["epoch/improved"] == 1.0
    assert "epoch/val_loss" not in metrics  # a NaN is left out, not logged as 0
    assert not any("confusion" in k for k in metrics)
    with pytest.raises(ValueError):
        tracker_metrics({"kind": "params"})


def test_flatten_params_and_tracking_uri(tmp_path, monkeypatch):
    assert flatten_params({"a": {"b": 1, "c": [1, 2]}, "d": None}) == {
        "a.b": 1,
        "a.c": "1,2",
        "d": None,
    }
    monkeypatch.chdir(tmp_path)
    assert resolve_tracking_uri("mlruns") == (tmp_path / "mlruns").as_uri()
    for uri in ("http://host:5000", "sqlite:///x.db", "file:///tmp/m", "databricks"):
        assert resolve_tracking_uri(uri) == uri


def run_with_trackers(tmp_path: Path, **track) -> tuple[RunPaths, Path]:
    """A synthetic two-epoch run through the real factory; returns its paths and checkpoint."""
    checkpoint = tmp_path / "saimp_best.pth"
    checkpoint.write_bytes(b"weights")
    checkpoint.with_suffix(".json").write_text('{"epoch": 1}')
    paths = RunPaths.in_dir(tmp_path / "logs", "20250101_000000")
    cfg = make_cfg(tmp_path, progress="lines", **track)
    logger = make_run_hooks(cfg, paths, params={"device": "cpu", "model.parameters": 1234})
    records = [epoch_record(1), epoch_record(2, val_loss=0.5)]
    try:
        drive(_quiet(logger), records=records, checkpoint=checkpoint)
    finally:
        logger.close()
    return paths, checkpoint


def _quiet(logger):
    logger.parts[0] = Hooks()  # no console lines in the test output
    return logger


def test_tensorboard_run_directory_holds_the_scalars(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    paths, checkpoint = run_with_trackers(
        tmp_path, tensorboard=True, tensorboard_dir=tmp_path / "runs"
    )
    run_dir = tmp_path / "runs" / "train_run_20250101_000000"
    assert list(run_dir.glob("events.out.tfevents.*"))
    events = EventAccumulator(str(run_dir), size_guidance={"scalars": 0, "tensors": 0})
    events.Reload()
    lines = read_jsonl(paths.jsonl)
    steps = [r for r in lines if r["kind"] == "step"]
    epochs = [r for r in lines if r["kind"] == "epoch"]

    logged = events.Scalars("step/loss")
    assert [e.step for e in logged] == [r["step"] for r in steps]
    assert [e.value for e in logged] == pytest.approx([r["loss"] for r in steps])
    val = events.Scalars("epoch/val_loss")
    assert [(e.step, e.value) for e in val] == [(1, 1.0), (2, 0.5)]
    assert [e.value for e in events.Scalars("epoch/train_loss")] == pytest.approx(
        [r["train_loss"] for r in epochs]
    )
    assert len(events.Scalars("epoch/val_recall/Stop")) == 2
    texts = events.Tags()["tensors"]  # add_text is stored as tensors
    assert "params/text_summary" in texts and "checkpoint/text_summary" in texts
    params = events.Tensors("params/text_summary")[0].tensor_proto.string_val[0].decode()
    assert "| train.lr | 0.001 |" in params and "| model.parameters | 1234 |" in params
    note = events.Tensors("checkpoint/text_summary")[-1].tensor_proto.string_val[0].decode()
    assert str(checkpoint) in note


@pytest.fixture
def fresh_mlflow_env(monkeypatch):
    """As on a fresh shell: the tracker itself must allow MLflow 3's local file store (and
    what it sets in the environment is undone after the test)."""
    pytest.importorskip("mlflow")
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "")
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE")


def test_mlflow_file_store_holds_metrics_params_and_checkpoint(tmp_path, fresh_mlflow_env):
    from mlflow.tracking import MlflowClient

    store = tmp_path / "mlruns"
    paths, _ = run_with_trackers(
        tmp_path, mlflow=True, mlflow_tracking_uri=str(store), mlflow_experiment="saimp-test"
    )
    client = MlflowClient(tracking_uri=store.as_uri())
    exp = client.get_experiment_by_name("saimp-test")
    (run,) = client.search_runs([exp.experiment_id])
    assert run.info.run_name == "train_run_20250101_000000"
    assert run.info.status == "FINISHED"
    assert run.data.params["train.lr"] == "0.001"
    assert run.data.params["model.parameters"] == "1234"
    assert run.data.tags["best_epoch"] == "2"

    lines = read_jsonl(paths.jsonl)
    steps = [r for r in lines if r["kind"] == "step"]
    history = sorted(client.get_metric_history(run.info.run_id, "step/loss"), key=lambda m: m.step)
    assert [(m.step, m.value) for m in history] == [(r["step"], r["loss"]) for r in steps]
    val = client.get_metric_history(run.info.run_id, "epoch/val_loss")
    assert sorted((m.step, m.value) for m in val) == [(1, 1.0), (2, 0.5)]

    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "checkpoint")}
    assert artifacts == {"checkpoint/saimp_best.pth", "checkpoint/saimp_best.json"}
    files = {a.path for a in client.list_artifacts(run.info.run_id, "run")}
    assert "run/train_run_20250101_000000.jsonl" in files
    local = Path(client.download_artifacts(run.info.run_id, "run", str(tmp_path / "dl")))
    stored = local / "train_run_20250101_000000.jsonl"
    assert json.loads(stored.read_text().splitlines()[-1])["kind"] == "epoch"


def test_mlflow_marks_a_failed_run(tmp_path, fresh_mlflow_env):
    from mlflow.tracking import MlflowClient

    store = tmp_path / "mlruns"
    cfg = make_cfg(tmp_path, mlflow=True, mlflow_tracking_uri=str(store))
    logger = make_run_hooks(cfg, RunPaths.in_dir(tmp_path / "logs", "x"))
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        logger.close()
    client = MlflowClient(tracking_uri=store.as_uri())
    (run,) = client.search_runs([client.get_experiment_by_name("saimp").experiment_id])
    assert run.info.status == "FAILED"
