"""A checkpoint's model as ONNX, checked against PyTorch before anything is written.

`export_onnx(checkpoint, out)` rebuilds the model from a best checkpoint (or a `last`
state) with `load_model`, exports it with torch's `torch.export`-based exporter
(`torch.onnx.export(..., dynamo=True)`, which needs onnxscript) and runs the same seeded
random windows through the model (eval mode, float32) and through onnxruntime on the
CPU, for batch sizes `PARITY_BATCH_SIZES`. Only when the largest absolute logit
difference is at most `atol` are the two files written:

- `out` (`FILE.onnx`): input `features` float32 `[batch, seq_len, n_features]` (the batch
  axis dynamic, the other two fixed by the checkpoint), output `logits` float32
  `[batch, n_classes]`; opset `DEFAULT_OPSET` unless asked otherwise (18 to 23).
- `FILE.json`: the checkpoint's sidecar (normalisation, feature names, classes...) with
  an `"export"` section: format, exporter, opset, input and output names and shapes,
  torch / onnx / onnxruntime versions, the ONNX file's sha256 and the parity result.

Both are staged as temporary files in the output directory, fsynced, then moved into
place with `os.replace` (the sidecar first, the model last), so a failed or interrupted
export leaves no half file and a failed parity check leaves no file at all.

The legacy TorchScript exporter (`dynamo=False`) also works for SAIMP on torch 2.13, but
torch marks it for removal, it warns while tracing the Transformer, and its graph has
about 3.6 times the nodes (370 against 102 for a 2-layer model).
"""

from __future__ import annotations

import copy
import hashlib
import importlib
import json
import logging
import os
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from src.core.errors import UserError
from src.core.paths import writable_file
from src.modelling.checkpointing.best import sidecar_path
from src.modelling.evaluation.inference import load_model

logger = logging.getLogger(__name__)

FORMAT = "onnx"
EXPORTER = "torch.onnx.export(dynamo=True)"
INPUT_NAME = "features"
OUTPUT_NAME = "logits"
BATCH_AXIS = "batch"
DEFAULT_OPSET = 20
"""torch 2.13's default for this exporter: Gelu and LayerNormalization are single ops."""
MIN_OPSET, MAX_OPSET = 18, 23
"""The opsets the exporter writes natively (below 18 it needs a lossy version conversion)."""
DEFAULT_ATOL = 1e-4
PARITY_BATCH_SIZES = (1, 7, 64)
PARITY_SEED = 0
_EXAMPLE_BATCH = 2
"""Batch of the example input that is traced: not 0 or 1, which torch.export specialises."""
INSTALL_HINT = "pip install 'saimp-trainer[onnx]' (in a clone: pip install -e '.[onnx]')"


class ExportError(UserError):
    """The exporter failed, or the ONNX model does not reproduce the PyTorch logits."""


@dataclass(frozen=True)
class Parity:
    """PyTorch (eval, CPU) against onnxruntime (CPU) on the same seeded random windows."""

    max_abs_diff: float
    atol: float
    batch_sizes: tuple[int, ...]
    seed: int

    @property
    def passed(self) -> bool:
        return bool(self.max_abs_diff <= self.atol)  # False for NaN

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "batch_sizes": list(self.batch_sizes), "passed": self.passed}


@dataclass(frozen=True)
class ExportResult:
    onnx_path: Path
    sidecar_path: Path
    opset: int
    parity: Parity
    export: dict[str, Any]
    """The sidecar's `"export"` section."""
    seconds: float


# ---------------------------------------------------------------------------- checks


def _require_onnx() -> tuple[Any, Any]:
    """`(onnx, onnxruntime)`, or one line telling the user what to install."""
    missing = []
    modules = {}
    for name in ("onnx", "onnxruntime", "onnxscript"):
        try:
            modules[name] = importlib.import_module(name)
        except ImportError:
            missing.append(name)
    if missing:
        raise UserError(
            f"ONNX export needs {', '.join(missing)}, which "
            f"{'is' if len(missing) == 1 else 'are'} not installed: {INSTALL_HINT}"
        )
    return modules["onnx"], modules["onnxruntime"]


def _check_options(out: Path, opset: int, atol: float) -> None:
    if out.suffix.lower() != ".onnx":
        raise UserError(f"--out: {out} must be a file name ending in .onnx")
    if not MIN_OPSET <= opset <= MAX_OPSET:
        raise UserError(f"--opset must be between {MIN_OPSET} and {MAX_OPSET}, got {opset}")
    if not (np.isfinite(atol) and atol > 0):
        raise UserError(f"--atol must be a positive number, got {atol}")


def _missing_dirs(path: Path) -> list[Path]:
    """The directories of `path` (deepest first) that do not exist yet."""
    return [p for p in [path, *path.parents] if not p.exists()]


# ---------------------------------------------------------------------------- export


@contextmanager
def _quiet_exporter() -> Iterator[None]:
    """The exporter's own warnings and log lines (deprecations inside torch, optional
    torchvision ops) are not the user's business; the parity check is the verdict."""
    onnx_logger = logging.getLogger("torch.onnx")
    level = onnx_logger.level
    onnx_logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        onnx_logger.setLevel(level)


def _export_model(model: torch.nn.Module, example: torch.Tensor, opset: int) -> Any:
    """The `onnx.ModelProto` of `model`, with a dynamic batch axis."""
    batch = torch.export.Dim(BATCH_AXIS)
    try:
        with _quiet_exporter(), torch.no_grad():
            program = torch.onnx.export(
                model,
                (example,),
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                dynamic_shapes=({0: batch},),
                opset_version=opset,
                dynamo=True,
                optimize=True,
                verbose=False,
            )
    except Exception as err:  # the exporter raises many types; the first line says why
        first = (str(err).strip().splitlines() or [type(err).__name__])[0][:300]
        raise ExportError(f"torch.onnx could not export the model: {first}") from err
    return program.model_proto


def _shape(value_info: Any) -> list[int | str]:
    return [d.dim_param or d.dim_value for d in value_info.type.tensor_type.shape.dim]


def _io_section(proto: Any, onnx: Any) -> dict[str, Any]:
    """Names, dtypes and shapes as the ONNX graph declares them (checked, not assumed)."""
    graph = proto.graph
    if [i.name for i in graph.input] != [INPUT_NAME] or [o.name for o in graph.output] != [
        OUTPUT_NAME
    ]:
        raise ExportError(
            f"the ONNX graph's inputs/outputs are {[i.name for i in graph.input]} / "
            f"{[o.name for o in graph.output]}, expected [{INPUT_NAME!r}] / [{OUTPUT_NAME!r}]"
        )
    section = {}
    for kind, info in (("input", graph.input[0]), ("output", graph.output[0])):
        shape = _shape(info)
        if not shape or not isinstance(shape[0], str):
            raise ExportError(f"the ONNX {kind} {info.name!r} has no dynamic batch axis: {shape}")
        section[kind] = {
            "name": info.name,
            "dtype": onnx.helper.tensor_dtype_to_np_dtype(info.type.tensor_type.elem_type).name,
            "shape": [BATCH_AXIS, *shape[1:]],
        }
    return section


def _parity(
    model: torch.nn.Module, session: Any, seq_len: int, n_features: int, atol: float
) -> Parity:
    g = torch.Generator().manual_seed(PARITY_SEED)
    worst = 0.0
    for b in PARITY_BATCH_SIZES:
        x = torch.randn(b, seq_len, n_features, generator=g)  # normalised features ~ N(0, 1)
        with torch.no_grad():
            expected = model(x).numpy()
        got = session.run([OUTPUT_NAME], {INPUT_NAME: x.numpy()})[0]
        if got.shape != expected.shape:
            raise ExportError(
                f"onnxruntime returned logits of shape {list(got.shape)} for a batch of {b}, "
                f"PyTorch {list(expected.shape)}"
            )
        diff = float(np.max(np.abs(got.astype(np.float64) - expected.astype(np.float64))))
        if np.isnan(diff) or diff > worst:  # a NaN, once seen, stays the verdict
            worst = diff
    return Parity(max_abs_diff=worst, atol=atol, batch_sizes=PARITY_BATCH_SIZES, seed=PARITY_SEED)


# ---------------------------------------------------------------------------- files


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _stage(path: Path, data: bytes) -> Path:
    """`data` in a fsynced temporary file beside `path` (removed if writing fails)."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.chmod(tmp, 0o666 & ~_umask())
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return Path(tmp)


def _commit(files: list[tuple[Path, bytes]]) -> None:
    """Write every `(path, data)` or none: all staged first, then renamed in order."""
    staged: list[tuple[Path, Path]] = []
    try:
        for path, data in files:
            staged.append((_stage(path, data), path))
        for tmp, path in staged:
            os.replace(tmp, path)
    finally:
        for tmp, _ in staged:
            tmp.unlink(missing_ok=True)
    for directory in {path.parent for path, _ in files}:  # make the renames durable
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _json_default(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def _json_bytes(obj: Any) -> bytes:
    """The sidecar laid out as the checkpoint's own (`atomic_save_json`)."""
    return (json.dumps(obj, indent=2, default=_json_default) + "\n").encode()


# ---------------------------------------------------------------------------- API


def export_onnx(
    checkpoint: Path | str,
    out: Path | str,
    *,
    opset: int | None = None,
    atol: float = DEFAULT_ATOL,
    log: Callable[[str], None] = logger.info,
) -> ExportResult:
    """Export `checkpoint`'s model to `out` (`.onnx`) and its sidecar to `out`'s `.json`,
    after checking onnxruntime's logits against PyTorch's (max |diff| <= `atol`).

    Raises `UserError` (bad options, onnx not installed, unwritable `out`),
    `CheckpointError` (bad checkpoint) or `ExportError` (exporter failure, parity
    failure, or an `OSError` while writing); then nothing is written, and an earlier
    export at `out` stays as it was.
    """
    started = time.perf_counter()
    checkpoint, out = Path(checkpoint), Path(out)
    opset = DEFAULT_OPSET if opset is None else int(opset)
    _check_options(out, opset, atol)
    onnx, ort = _require_onnx()
    model, sidecar = load_model(checkpoint)
    json_out = out.with_suffix(".json")
    if json_out.resolve() == sidecar_path(checkpoint).resolve():
        raise UserError(
            f"--out: {out}'s sidecar {json_out} would replace the checkpoint's own sidecar; "
            f"choose another name, such as {out.with_name(out.stem + '_model.onnx')}"
        )
    created = _missing_dirs(out.parent)
    writable_file(out, "--out")  # before the work
    writable_file(json_out, "--out")
    try:
        parity, export = _export_checked(
            model, sidecar, checkpoint, out, json_out, opset, atol, onnx, ort
        )
    except BaseException:
        for d in created:  # directories this call made, if still empty
            try:
                d.rmdir()
            except OSError:
                break
        raise
    seconds = time.perf_counter() - started
    log(
        f"[EXPORT] {checkpoint} -> ONNX opset {opset} ({EXPORTER}), input {INPUT_NAME} "
        f"{export['input']['shape']}, output {OUTPUT_NAME} "
        f"{export['output']['shape']} | {seconds:.1f}s"
    )
    sizes = ", ".join(map(str, parity.batch_sizes))
    log(
        f"parity (onnxruntime CPU vs PyTorch, batches {sizes}): "
        f"max |logit diff| {parity.max_abs_diff:.3g} <= {parity.atol:g}"
    )
    log(f"sidecar {json_out}")
    log(str(out))
    return ExportResult(out, json_out, opset, parity, export, seconds)


def _export_checked(
    model: torch.nn.Module,
    sidecar: dict[str, Any],
    checkpoint: Path,
    out: Path,
    json_out: Path,
    opset: int,
    atol: float,
    onnx: Any,
    ort: Any,
) -> tuple[Parity, dict[str, Any]]:
    """Export, check and parity-test the model, then write both files (or neither)."""
    model = model.float().eval()
    seq_len, n_features = model.cfg.seq_len, model.cfg.n_features
    example = torch.randn(_EXAMPLE_BATCH, seq_len, n_features, generator=torch.Generator())
    proto = _export_model(model, example, opset)
    try:
        onnx.checker.check_model(proto)
    except Exception as err:
        raise ExportError(f"the exported ONNX model is not valid: {err}") from None
    io = _io_section(proto, onnx)
    data = proto.SerializeToString()
    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only
    try:
        session = ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
    except Exception as err:
        first = (str(err).strip().splitlines() or [type(err).__name__])[0][:300]
        raise ExportError(f"onnxruntime cannot load the exported model: {first}") from None
    parity = _parity(model, session, seq_len, n_features, atol)
    if not parity.passed:
        how = (
            f"onnxruntime's logits differ from PyTorch's by up to {parity.max_abs_diff:.3g}"
            if np.isfinite(parity.max_abs_diff)
            else "onnxruntime's or PyTorch's logits are not finite"
        )
        raise ExportError(f"parity check failed: {how} (allowed {atol:g}); nothing written")
    export = {
        "format": FORMAT,
        "exporter": EXPORTER,
        "opset": opset,
        **io,
        "torch": torch.__version__,
        "onnx": onnx.__version__,
        "onnxruntime": ort.__version__,
        "checkpoint": str(checkpoint),
        "file": out.name,
        "sha256": hashlib.sha256(data).hexdigest(),
        "parity": parity.to_dict(),
    }
    doc = copy.deepcopy(sidecar)
    doc["export"] = export
    # The sidecar first: the .onnx path appears only once everything beside it is there.
    _commit([(json_out, _json_bytes(doc)), (out, data)])
    return parity, export
