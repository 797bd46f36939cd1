"""`saimp export` (`src.modelling.export`) and `prediction/onnx_export.py`.

A tiny model is trained for a few steps and saved with the project's checkpoint writer;
its ONNX export is run by onnxruntime and compared with the checkpoint's model as
`load_model` rebuilds it (not with anything the exporter computed). Failures are
simulated without a second export: the exporter is replaced by one returning the
first export's graph, perturbed or not.
"""

from __future__ import annotations

import dataclasses
import io
import json
import sys
from contextlib import redirect_stdout
from pathlib import Path

import numpy as np
import pytest
import torch

from src.core.errors import run_cli
from src.modelling.checkpointing.best import save_best, sidecar_path
from src.modelling.evaluation.inference import load_model
from src.modelling.export import main
from src.modelling.model import SAIMP, SAIMPConfig
from src.modelling.prediction import onnx_export as ox

T, F = 6, 8


def tiny_checkpoint(path: Path, **model: object) -> Path:
    """A tiny SAIMP trained for a few steps, saved as a best checkpoint with a sidecar."""
    torch.manual_seed(0)
    cfg = SAIMPConfig(n_features=F, seq_len=T, d_model=8, n_heads=2, n_layers=1, d_ff=16, **model)
    net = SAIMP(cfg)
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    g = torch.Generator().manual_seed(1)
    for _ in range(5):
        x, y = torch.randn(16, T, F, generator=g), torch.randint(0, 4, (16,), generator=g)
        opt.zero_grad()
        torch.nn.functional.cross_entropy(net(x), y).backward()
        opt.step()
    features = [f"f{i}" for i in range(F)]
    sidecar = {
        "format": "saimp-checkpoint",
        "version": 1,
        "model": dataclasses.asdict(cfg),
        "features": features,
        "normalizer": {"features": features, "mean": [0.0] * F, "std": [1.0] * F, "n_rows": 1},
        "class_names": ["Neutro", "Stop", "Long", "SuperLong"],
        "split": {"val_start_ms": 1_000, "test_start_ms": 2_000},
        "epoch": 5,
    }
    save_best(net, path, sidecar)
    return path


def run(argv: list[str], capsys: pytest.CaptureFixture) -> tuple[int, list[str], list[str]]:
    code = run_cli(main, argv)
    out, err = capsys.readouterr()
    return code, out.strip().splitlines(), err.strip().splitlines()


def files_in(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.rglob("*")) if directory.exists() else []


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """One `saimp export` of the tiny checkpoint, run through the command line."""
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    root = tmp_path_factory.mktemp("export")
    ckpt = tiny_checkpoint(root / "ckpt" / "best.pth")
    out = root / "out" / "deep" / "model.onnx"
    stdout = io.StringIO()
    with redirect_stdout(stdout):
        code = run_cli(main, ["--format", "onnx", "--checkpoint", str(ckpt), "--out", str(out)])
    return {"code": code, "lines": stdout.getvalue().splitlines(), "ckpt": ckpt, "out": out}


def session(path: Path):
    import onnxruntime as ort

    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def test_onnxruntime_reproduces_pytorch_for_batches_1_and_7(exported: dict) -> None:
    assert exported["code"] == 0
    model, _ = load_model(exported["ckpt"])
    sess = session(exported["out"])
    g = torch.Generator().manual_seed(123)  # not the built-in check's seed
    for batch in (1, 7):
        x = torch.randn(batch, T, F, generator=g)
        with torch.no_grad():
            expected = model(x).numpy()
        (got,) = sess.run(["logits"], {"features": x.numpy()})
        assert got.dtype == np.float32 and got.shape == (batch, 4)
        assert np.abs(got - expected).max() <= 1e-4
        if batch > 1:
            assert not np.allclose(got, got.mean(axis=0))  # the windows' logits differ


def test_the_batch_axis_is_dynamic_and_the_rest_fixed(exported: dict) -> None:
    import onnx

    graph = onnx.load(str(exported["out"])).graph
    dims = [
        [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]
        for v in (graph.input[0], graph.output[0])
    ]
    assert [graph.input[0].name, graph.output[0].name] == ["features", "logits"]
    assert dims == [["batch", T, F], ["batch", 4]]
    sess = session(exported["out"])
    for batch in (1, 3, 130):
        (got,) = sess.run(["logits"], {"features": np.zeros((batch, T, F), np.float32)})
        assert got.shape == (batch, 4)


def test_the_sidecar_is_written_beside_with_an_export_section(exported: dict) -> None:
    out: Path = exported["out"]
    written = json.loads(out.with_suffix(".json").read_text())
    original = json.loads(sidecar_path(exported["ckpt"]).read_text())
    export = written.pop("export")
    assert written == original  # the checkpoint's sidecar, whole
    assert export["format"] == "onnx" and export["opset"] == ox.DEFAULT_OPSET == 20
    assert export["input"] == {"name": "features", "dtype": "float32", "shape": ["batch", T, F]}
    assert export["output"] == {"name": "logits", "dtype": "float32", "shape": ["batch", 4]}
    assert export["torch"] == torch.__version__
    parity = export["parity"]
    assert parity["passed"] and 0 <= parity["max_abs_diff"] <= parity["atol"] == 1e-4
    assert 1 in parity["batch_sizes"]
    import hashlib

    assert export["sha256"] == hashlib.sha256(out.read_bytes()).hexdigest()
    assert files_in(out.parent) == ["model.json", "model.onnx"]  # no temporary file left


def test_the_console_shows_the_difference_and_ends_with_the_onnx_path(exported: dict) -> None:
    lines = exported["lines"]
    assert lines[-1] == str(exported["out"])
    assert any("max |logit diff|" in line for line in lines), lines


def test_the_cnn_encoder_exports(tmp_path: Path) -> None:
    pytest.importorskip("onnxscript")
    pytest.importorskip("onnxruntime")
    ckpt = tiny_checkpoint(tmp_path / "c.pth", encoder="cnn", levels=2)
    result = ox.export_onnx(ckpt, tmp_path / "c_model.onnx", log=lambda _: None)
    assert result.parity.passed and result.export["input"]["shape"] == ["batch", T, F]
    model, _ = load_model(ckpt)
    x = torch.randn(5, T, F)
    (got,) = session(result.onnx_path).run(["logits"], {"features": x.numpy()})
    assert np.abs(got - model(x).detach().numpy()).max() <= 1e-4


# ---------------------------------------------------------------------------- failures


def reuse_export(monkeypatch: pytest.MonkeyPatch, exported: dict, perturb: float = 0.0) -> None:
    """Make the exporter return the fixture's graph, its last bias shifted by `perturb`."""
    import onnx
    from onnx import numpy_helper

    proto = onnx.load(str(exported["out"]))
    if perturb:
        (init,) = [i for i in proto.graph.initializer if i.name == "head.3.bias"]
        init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init) + perturb, init.name))
    monkeypatch.setattr(ox, "_export_model", lambda *_: proto)


@pytest.mark.parametrize("perturb, needle", [(1e-3, "by up to 0.001"), (np.nan, "not finite")])
def test_a_parity_failure_is_one_line_exit_2_and_writes_nothing(
    perturb: float,
    needle: str,
    exported: dict,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys,
) -> None:
    reuse_export(monkeypatch, exported, perturb=perturb)
    out = tmp_path / "new" / "model.onnx"
    code, lines, err = run(["--checkpoint", str(exported["ckpt"]), "--out", str(out)], capsys)
    assert code == 2 and len(err) == 1, err
    assert err[0].startswith("error: parity check failed") and "allowed 0.0001" in err[0]
    assert needle in err[0] and lines == []
    assert files_in(tmp_path) == []  # nor the directory the probe made


def test_a_parity_failure_keeps_an_earlier_export(
    exported: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    reuse_export(monkeypatch, exported, perturb=1e-3)
    out = tmp_path / "model.onnx"
    out.write_bytes(b"earlier")
    out.with_suffix(".json").write_text("{}")
    code, _, _ = run(["--checkpoint", str(exported["ckpt"]), "--out", str(out)], capsys)
    assert code == 2
    assert out.read_bytes() == b"earlier" and out.with_suffix(".json").read_text() == "{}"
    assert files_in(tmp_path) == ["model.json", "model.onnx"]


def test_the_tolerance_is_the_bound(
    exported: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    reuse_export(monkeypatch, exported, perturb=1e-3)
    result = ox.export_onnx(exported["ckpt"], tmp_path / "m.onnx", atol=2e-3, log=print)
    assert 1e-3 - 1e-6 <= result.parity.max_abs_diff <= 1e-3 + 1e-6  # what was perturbed
    assert files_in(tmp_path) == ["m.json", "m.onnx"]


def test_a_write_that_fails_midway_leaves_no_file(
    exported: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    reuse_export(monkeypatch, exported)
    real_stage = ox._stage

    def stage(path: Path, data: bytes) -> Path:
        if path.suffix == ".onnx":  # the sidecar is already staged
            raise OSError(28, "No space left on device", str(path))
        return real_stage(path, data)

    monkeypatch.setattr(ox, "_stage", stage)
    code, _, err = run(
        ["--checkpoint", str(exported["ckpt"]), "--out", str(tmp_path / "m.onnx")], capsys
    )
    assert code == 2 and len(err) == 1 and "No space left on device" in err[0], err
    assert files_in(tmp_path) == []


@pytest.mark.parametrize(
    "case, needle",
    [
        ("missing_checkpoint", "--checkpoint: "),
        ("missing_sidecar", "sidecar"),
        ("file_in_the_way", "is a file, so"),
        ("checkpoint_sidecar", "would replace the checkpoint's own sidecar"),
        ("not_onnx", "must be a file name ending in .onnx"),
        ("bad_format", "--format"),
        ("bad_opset", "--opset must be between 18 and 23"),
    ],
)
def test_user_errors_are_one_line_exit_2_and_write_nothing(
    case: str, needle: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    def no_export(*_: object) -> None:
        raise AssertionError("exported despite the error")

    monkeypatch.setattr(ox, "_export_model", no_export)
    ckpt = tiny_checkpoint(tmp_path / "ckpt" / "best.pth")
    out = tmp_path / "out" / "m.onnx"
    argv = ["--checkpoint", str(ckpt), "--out", str(out)]
    if case == "missing_checkpoint":
        argv[1] = str(tmp_path / "nope.pth")
    elif case == "missing_sidecar":
        sidecar_path(ckpt).unlink()
    elif case == "file_in_the_way":
        (tmp_path / "out").write_text("a file")
    elif case == "checkpoint_sidecar":
        argv[3] = str(ckpt.with_suffix(".onnx"))
    elif case == "not_onnx":
        argv[3] = str(out.with_suffix(".pb"))
    elif case == "bad_format":
        argv += ["--format", "tflite"]
    elif case == "bad_opset":
        argv += ["--opset", "11"]
    before = files_in(tmp_path)
    code, lines, err = run(argv, capsys)
    assert code == 2 and lines == []
    assert len(err) == 1 and err[0].startswith("error: ") and needle in err[0], err
    assert files_in(tmp_path) == before


def test_missing_onnxruntime_says_what_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # `import onnxruntime` fails
    ckpt = tiny_checkpoint(tmp_path / "best.pth")
    code, _, err = run(["--checkpoint", str(ckpt), "--out", str(tmp_path / "x" / "m.onnx")], capsys)
    assert code == 2 and len(err) == 1, err
    assert "onnxruntime" in err[0] and "pip install 'saimp-trainer[onnx]'" in err[0]
    assert files_in(tmp_path) == ["best.json", "best.pth"]
