"""Using a trained model: predictions on new candles or a lake, calibrated
probabilities, the decision rule, and export.

The Python API (README, "Predictions"):

    from src.modelling.prediction import load_model, predict
    model, sidecar = load_model("data/saimp_best.pth")
    table = predict(model, sidecar, candles)     # pyarrow.Table; .to_pandas()

`load_model` and `predict` are imported on first use, so importing a submodule
(`calibration`, `decision`) does not import torch.
"""

from __future__ import annotations

from typing import Any

_LAZY = {
    "load_model": "src.modelling.evaluation.inference",
    "predict": "src.modelling.prediction.from_candles",
    "Predictor": "src.modelling.prediction.predictor",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
