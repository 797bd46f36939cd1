"""Classification metrics from a confusion matrix (pure numpy).

Everything is derived from counts, so metrics reduced across ranks by summing
confusion matrices are exact, and the same functions serve training and evaluation.
"""

from __future__ import annotations

import math

import numpy as np


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> np.ndarray:
    """counts[i, j] = samples of true class i predicted as class j."""
    idx = np.asarray(y_true, dtype=np.int64) * n_classes + np.asarray(y_pred, dtype=np.int64)
    return np.bincount(idx, minlength=n_classes * n_classes).reshape(n_classes, n_classes)


def _safe_div(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    num, den = np.asarray(num, dtype=np.float64), np.asarray(den, dtype=np.float64)
    return np.divide(num, den, out=np.zeros_like(num), where=den > 0)


def per_class(cm: np.ndarray) -> dict[str, np.ndarray]:
    """Precision, recall, F1 and support per class (0 where undefined, as sklearn's default)."""
    cm = np.asarray(cm, dtype=np.float64)
    tp = np.diag(cm)
    support = cm.sum(axis=1)
    predicted = cm.sum(axis=0)
    precision = _safe_div(tp, predicted)
    recall = _safe_div(tp, support)
    f1 = _safe_div(2 * precision * recall, precision + recall)
    return {"precision": precision, "recall": recall, "f1": f1, "support": support}


def macro_f1(cm: np.ndarray) -> float:
    """Mean F1 over the classes present in the labels or the predictions."""
    cm = np.asarray(cm)
    present = (cm.sum(axis=0) + cm.sum(axis=1)) > 0
    if not present.any():
        return 0.0
    return float(per_class(cm)["f1"][present].mean())


def balanced_accuracy(cm: np.ndarray) -> float:
    """Mean recall over the classes that occur in the labels."""
    cm = np.asarray(cm)
    support = cm.sum(axis=1) > 0
    if not support.any():
        return 0.0
    return float(per_class(cm)["recall"][support].mean())


def accuracy(cm: np.ndarray) -> float:
    total = np.asarray(cm).sum()
    return float(np.trace(cm) / total) if total else 0.0


def constant_confusion(support: np.ndarray, predicted_class: int) -> np.ndarray:
    """Confusion matrix of a predictor that always answers `predicted_class`."""
    support = np.asarray(support, dtype=np.float64)
    cm = np.zeros((support.size, support.size))
    cm[:, predicted_class] = support
    return cm


def random_confusion(support: np.ndarray, probabilities: np.ndarray) -> np.ndarray:
    """Expected confusion matrix of guessing class j with probability p_j, blind to the input.

    Row i is support_i * p: exact in expectation, so no sampling and no seed. Metrics of
    this matrix are the metrics of the expected counts (for large supports, the expected
    metrics).
    """
    support = np.asarray(support, dtype=np.float64)
    p = np.asarray(probabilities, dtype=np.float64)
    if p.shape != support.shape or (p < 0).any() or not np.isclose(p.sum(), 1.0):
        raise ValueError(f"probabilities must be {support.size} non-negative numbers summing to 1")
    return np.outer(support, p)


def is_better(metric_name: str, value: float, best: float | None) -> bool:
    """Whether `value` of `metric_name` beats `best`: higher for macro-F1 (and other
    scores), lower for a loss. A non-finite value never does; anything beats None."""
    if not math.isfinite(value):
        return False
    if best is None:
        return True
    return value < best if metric_name.endswith("loss") else value > best
