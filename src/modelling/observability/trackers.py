"""Optional experiment trackers: TensorBoard (`--tensorboard`) and MLflow (`--mlflow`).

Both are off by default and live behind extras, so the base install stays lean:
`pip install -e '.[tensorboard]'`, `pip install -e '.[mlflow]'` (the `mlflow-skinny`
package is enough for a local store). They are imported only when switched on; a
missing extra stops the run at its start with a `UserError` naming the flag and the
install command.

Trackers are record sinks: `metrics_file.MetricsRecorder` builds each JSONL record once and
hands the same record to the JSONL file and to every tracker, so all of them receive the
same numbers. A sink receives:
- `log_params(params)`: flat `{"train.lr": 0.001, ...}` facts, at the start;
- `write(record)`: each step and epoch record (see `metrics_file` for the keys), turned into
  scalars by `tracker_metrics`: `step/loss`, `step/acc`, `step/lr`, ... at the global
  step, and `epoch/train_loss`, `epoch/val_loss`, `epoch/val_recall/Stop`, ... at the
  epoch number;
- `checkpoint_saved(path, record)`: the best checkpoint was written (MLflow stores it
  and its sidecar as artifacts under `checkpoint/`; TensorBoard, which has no artifact
  store, records its path as text);
- `close()`: the end of the run (MLflow also stores the run's JSONL, PNG and log).
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from src.core.errors import UserError

MLFLOW_PARAM_CHARS = 500
"""Longest parameter value every MLflow version accepts; longer values are cut."""


class MissingExtraError(UserError):
    """A tracker was switched on but its optional dependency is not installed."""

    def __init__(self, flag: str, extra: str) -> None:
        super().__init__(
            f"{flag} needs the optional '{extra}' extra, which is not installed: "
            f"pip install -e '.[{extra}]' (or switch {flag} off)"
        )


class RecordSink:
    """Where the run's records go (the JSONL file, a tracker): every method does nothing."""

    def log_params(self, params: dict[str, Any]) -> None:
        """Flat facts about the run."""

    def write(self, record: dict[str, Any]) -> None:
        """One step or epoch record (JSON-clean: NaN already replaced by None)."""

    def checkpoint_saved(self, path: Path, record: dict[str, Any] | None = None) -> None:
        """The best checkpoint and its `.json` sidecar were just written."""

    def close(self) -> None:
        """The run ended; also called after an error (then `sys.exc_info()` holds it)."""


def flatten_params(params: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """`{"train": {"lr": 1e-3}}` -> `{"train.lr": 1e-3}`; lists and tuples become text."""
    flat: dict[str, Any] = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten_params(value, f"{name}."))
        elif isinstance(value, list | tuple):
            flat[name] = ",".join(str(v) for v in value)
        else:
            flat[name] = value
    return flat


_NOT_METRICS = {"kind", "epoch", "batch", "step", "time"}


def tracker_metrics(record: dict[str, Any]) -> tuple[int, dict[str, float]]:
    """The scalars a tracker logs for one JSONL record, and the step they are logged at.

    Step records give `step/<key>` at `record["step"]`; epoch records `epoch/<key>` at the
    epoch number, with dicts flattened (`epoch/val_recall/Long`). Lists (the confusion
    matrix), text and None (a NaN) are left out; booleans become 0 or 1.
    """
    kind = record.get("kind")
    if kind not in ("step", "epoch"):
        raise ValueError(f"not a step or epoch record: kind={kind!r}")
    step = int(record["step"] if kind == "step" else record["epoch"])
    metrics: dict[str, float] = {}

    def add(name: str, value: Any) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                add(f"{name}/{k}", v)
        elif isinstance(value, int | float):  # bool included: True -> 1.0
            metrics[name] = float(value)

    for key, value in record.items():
        if key not in _NOT_METRICS:
            add(f"{kind}/{key}", value)
    return step, metrics


# -- TensorBoard --------------------------------------------------------------------------


class TensorBoardTracker(RecordSink):
    """Scalars, params (as a text table) and the best checkpoint's path in `log_dir`."""

    def __init__(self, log_dir: Path) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as err:
            raise MissingExtraError("--tensorboard", "tensorboard") from err
        self.log_dir = Path(log_dir)
        self.writer = SummaryWriter(log_dir=str(self.log_dir))

    def log_params(self, params: dict[str, Any]) -> None:
        rows = "\n".join(f"| {k} | {v} |" for k, v in params.items())
        self.writer.add_text("params", f"| param | value |\n|---|---|\n{rows}")

    def write(self, record: dict[str, Any]) -> None:
        step, metrics = tracker_metrics(record)
        wall = record.get("time")
        for name, value in metrics.items():
            self.writer.add_scalar(name, value, global_step=step, walltime=wall)

    def checkpoint_saved(self, path: Path, record: dict[str, Any] | None = None) -> None:
        epoch = (record or {}).get("epoch")
        self.writer.add_text(
            "checkpoint",
            f"best checkpoint `{path}` (sidecar `{Path(path).with_suffix('.json')}`), "
            f"epoch {epoch}",
            global_step=epoch,
        )

    def close(self) -> None:
        error = sys.exc_info()[1]
        if error is not None:
            self.writer.add_text("status", f"run ended with an error: {error!r}")
        self.writer.close()


# -- MLflow -------------------------------------------------------------------------------


def resolve_tracking_uri(uri: str) -> str:
    """A plain path (the default `mlruns`) becomes an absolute `file://` URI of a local store;
    a URI with a scheme (`http://`, `sqlite:///`, `file:`, `databricks`) is kept."""
    if uri == "databricks" or "://" in uri or uri.startswith("file:"):
        return uri
    return Path(uri).expanduser().resolve().as_uri()


class MlflowTracker(RecordSink):
    """One MLflow run in `experiment` at `tracking_uri`: params, metrics, checkpoint, run files.

    A local file store is the default. MLflow 3 refuses file stores unless
    `MLFLOW_ALLOW_FILE_STORE` is set; for a local path it is set to true here, unless the
    user already set it. `files_at_close` (the run's JSONL, PNG and log) are stored as
    artifacts under `run/` when the run ends.
    """

    def __init__(
        self,
        tracking_uri: str,
        experiment: str,
        run_name: str,
        files_at_close: Iterable[Path] = (),
    ) -> None:
        try:
            from mlflow.entities import Metric, Param
            from mlflow.exceptions import MlflowException
            from mlflow.tracking import MlflowClient
        except ImportError as err:
            raise MissingExtraError("--mlflow", "mlflow") from err
        self._Metric, self._Param = Metric, Param
        self.tracking_uri = resolve_tracking_uri(tracking_uri)
        if self.tracking_uri.startswith("file:"):
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        self.files_at_close = [Path(p) for p in files_at_close]
        try:
            self.client = MlflowClient(tracking_uri=self.tracking_uri)
            exp = self.client.get_experiment_by_name(experiment)
            exp_id = exp.experiment_id if exp is not None else None
            if exp_id is None:
                exp_id = self.client.create_experiment(experiment)
            self.run_id = self.client.create_run(exp_id, run_name=run_name).info.run_id
        except MlflowException as err:
            raise UserError(
                f"--mlflow: cannot open experiment {experiment!r} at {self.tracking_uri} "
                f"(track.mlflow_tracking_uri): {err}"
            ) from None
        self.experiment_id = exp_id

    def log_params(self, params: dict[str, Any]) -> None:
        items = [self._Param(str(k), str(v)[:MLFLOW_PARAM_CHARS]) for k, v in params.items()]
        for i in range(0, len(items), 100):  # MLflow takes at most 100 params per call
            self.client.log_batch(self.run_id, params=items[i : i + 100])

    def write(self, record: dict[str, Any]) -> None:
        step, metrics = tracker_metrics(record)
        stamp = int(1000 * (record.get("time") or time.time()))
        batch = [self._Metric(k, v, stamp, step) for k, v in metrics.items()]
        if batch:
            self.client.log_batch(self.run_id, metrics=batch)

    def checkpoint_saved(self, path: Path, record: dict[str, Any] | None = None) -> None:
        path = Path(path)
        for p in (path, path.with_suffix(".json")):
            if p.exists():
                self.client.log_artifact(self.run_id, str(p), "checkpoint")
        if record is not None and "epoch" in record:
            self.client.set_tag(self.run_id, "best_epoch", str(record["epoch"]))

    def close(self) -> None:
        error = sys.exc_info()[1]
        try:
            for p in self.files_at_close:
                if p.exists():
                    self.client.log_artifact(self.run_id, str(p), "run")
        finally:
            if error is None:
                status = "FINISHED"
            elif isinstance(error, KeyboardInterrupt) or hasattr(error, "signum"):
                # Ctrl-C, or the loop's RunInterrupted (SIGINT/SIGTERM, `last` was saved)
                status = "KILLED"
            else:
                status = "FAILED"
            self.client.set_terminated(self.run_id, status=status)


def make_trackers(track: Any, run_name: str, files_at_close: Iterable[Path] = ()) -> list:
    """The trackers `track` (a `TrackConfig`) switches on, TensorBoard first; [] by default.

    Raises `MissingExtraError` (a `UserError`) when a switched-on tracker is not installed.
    """
    trackers: list[RecordSink] = []
    try:
        if track.tensorboard:
            trackers.append(TensorBoardTracker(Path(track.tensorboard_dir) / run_name))
        if track.mlflow:
            trackers.append(
                MlflowTracker(
                    track.mlflow_tracking_uri, track.mlflow_experiment, run_name, files_at_close
                )
            )
    except BaseException:
        for t in trackers:
            t.close()
        raise
    return trackers
