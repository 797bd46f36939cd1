"""The numbers of an evaluation report, its baselines and its console table (pure numpy).

Nothing here reads files, runs the model or prints: `evaluate.py` feeds labels and
predictions in and writes what comes out. Everything is derived from confusion
matrices with `src.modelling.evaluation.metrics`, the functions training uses for validation.

Baselines (what a trader would get without the model):
- majority: always answer the most frequent class (of the training split when it is
  known, else of the evaluated split; the report says which);
- random: answer class j with probability p_j, blind to the input, where p is the
  evaluated split's own label distribution. Its expected confusion matrix is analytic
  (row i = support_i * p), so its metrics are exact and need no seed. Among all
  label-blind guessers, these p give the highest macro-F1 (F1_i = 2 p_i q_i / (p_i + q_i)
  is concave in the guessing rates q and peaks at q = p), which is 1 / (classes present);
  beating it is the least a useful model must do.

Chance level of the model itself (`shift_null`): the model's predictions are circularly
shifted against the labels by a random offset of at least a label horizon plus a
window, many times, and macro-F1 recomputed. A shift keeps the label distribution, the
prediction distribution and the autocorrelation of both sequences (neighbouring windows
overlap and share most of their label horizon), and only breaks their alignment. A
plain permutation would treat overlapping windows as independent samples and make the
spread far too narrow.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from src.core.constants import CLASS_NAMES
from src.modelling.evaluation import metrics

REPORT_FORMAT = "saimp-eval-report"
REPORT_VERSION = 2
"""2: adds `calibration` and `decision` (version 1's keys are unchanged: the top-level
metrics are the argmax of the model's raw logits)."""


def class_metrics(cm: np.ndarray, class_names: Sequence[str] = CLASS_NAMES) -> dict[str, Any]:
    """Per-class precision/recall/F1/support, macro-F1, balanced accuracy, accuracy, counts."""
    cm = np.asarray(cm)
    pc = metrics.per_class(cm)
    integral = np.allclose(cm, np.round(cm))
    matrix = np.round(cm).astype(np.int64).tolist() if integral else cm.astype(float).tolist()
    support = pc["support"]
    return {
        "n_samples": int(round(float(cm.sum()))),
        "accuracy": metrics.accuracy(cm),
        "macro_f1": metrics.macro_f1(cm),
        "balanced_accuracy": metrics.balanced_accuracy(cm),
        "per_class": {
            name: {
                "precision": float(pc["precision"][i]),
                "recall": float(pc["recall"][i]),
                "f1": float(pc["f1"][i]),
                "support": int(round(float(support[i]))),
            }
            for i, name in enumerate(class_names)
        },
        "confusion_matrix": matrix,
    }


def distribution(counts: Sequence[float], class_names: Sequence[str] = CLASS_NAMES) -> dict:
    """{class: {"count", "fraction"}} for a vector of counts."""
    counts = np.asarray(counts, dtype=np.float64)
    total = counts.sum()
    return {
        name: {
            "count": int(round(float(c))),
            "fraction": float(c / total) if total else 0.0,
        }
        for name, c in zip(class_names, counts, strict=True)
    }


def majority_baseline(
    support: np.ndarray,
    reference_counts: np.ndarray | None,
    reference: str,
    class_names: Sequence[str] = CLASS_NAMES,
) -> dict[str, Any]:
    """Always predict the most frequent class of `reference_counts` (else of `support`)."""
    support = np.asarray(support, dtype=np.float64)
    if reference_counts is None or np.asarray(reference_counts).sum() <= 0:
        reference_counts, reference = support, "evaluated split"
    cls = int(np.argmax(reference_counts))
    return {
        "predicted_class": class_names[cls],
        "class_from": reference,
        "method": "exact: every sample is given the same class",
        **class_metrics(metrics.constant_confusion(support, cls), class_names),
    }


def random_baseline(
    support: np.ndarray, class_names: Sequence[str] = CLASS_NAMES
) -> dict[str, Any]:
    """Guess each class at its frequency in the evaluated split (analytic expectation)."""
    support = np.asarray(support, dtype=np.float64)
    total = support.sum()
    p = support / total if total else np.full(support.size, 1.0 / support.size)
    return {
        "probabilities": {n: float(x) for n, x in zip(class_names, p, strict=True)},
        "probabilities_from": "evaluated split (the label-blind guess with the highest "
        "expected macro-F1)",
        "method": "analytic: metrics of the expected confusion matrix, row i = support_i * p",
        **class_metrics(metrics.random_confusion(support, p), class_names),
    }


def shift_null(
    y_true: np.ndarray,
    y_pred: np.ndarray,
    *,
    n_classes: int = len(CLASS_NAMES),
    draws: int = 1000,
    min_shift: int = 1,
    seed: int = 0,
) -> dict[str, Any] | None:
    """Macro-F1 of the predictions circularly shifted against the labels (chance level).

    Shifts are drawn uniformly from [min_shift, n - min_shift]; the result holds the
    null's mean, standard deviation and 99.9th percentile, and the observed macro-F1's
    z-score and one-sided p-value ((1 + #null >= observed) / (1 + draws)). None when the
    split is too short for even one shift of `min_shift`, or `draws` is 0.
    """
    y_true = np.asarray(y_true, dtype=np.int64)
    y_pred = np.asarray(y_pred, dtype=np.int64)
    n = y_true.size
    min_shift = max(1, int(min_shift))
    if draws <= 0 or n - min_shift < min_shift:
        return None
    rng = np.random.default_rng(seed)
    shifts = rng.integers(min_shift, n - min_shift + 1, size=draws)
    base = y_true * n_classes
    null = np.empty(draws)
    for k, s in enumerate(shifts):
        null[k] = metrics.macro_f1(_cm_from_codes(base + np.roll(y_pred, int(s)), n_classes))
    observed = metrics.macro_f1(metrics.confusion_matrix(y_true, y_pred, n_classes))
    sd = float(null.std(ddof=1)) if draws > 1 else 0.0
    mean = float(null.mean())
    return {
        "method": "circular shift of predictions against labels (keeps both sequences' "
        "autocorrelation, breaks their alignment)",
        "draws": int(draws),
        "min_shift": min_shift,
        "seed": int(seed),
        "null_mean": mean,
        "null_sd": sd,
        "null_q999": float(np.quantile(null, 0.999)),
        "observed": observed,
        "z": (observed - mean) / sd if sd > 1e-12 else None,
        "p_value": float((1 + np.count_nonzero(null >= observed)) / (1 + draws)),
    }


def _cm_from_codes(codes: np.ndarray, n_classes: int) -> np.ndarray:
    return np.bincount(codes, minlength=n_classes * n_classes).reshape(n_classes, n_classes)


def single_class_warning(
    support: np.ndarray, class_names: Sequence[str] = CLASS_NAMES
) -> str | None:
    """Why the summary metrics of a split whose true labels hold one class are not
    scores (answering that class always makes every one of them 1), else None."""
    present = np.flatnonzero(np.asarray(support) > 0)
    if len(present) != 1:
        return None
    name = class_names[int(present[0])]
    return (
        f"the evaluated split holds only {name} windows: macro-F1, balanced accuracy and "
        f"accuracy are not scores for a single-class split (always answering {name} gets "
        "1.0); evaluate on a split with several classes"
    )


def build_report(
    y_true: np.ndarray,
    y_pred: np.ndarray,
    *,
    class_names: Sequence[str] = CLASS_NAMES,
    train_counts: np.ndarray | None = None,
    train_counts_from: str = "training split",
    null_draws: int = 1000,
    min_shift: int = 1,
    seed: int = 0,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The whole report dict (JSON-ready) from labels and predictions in stream order."""
    k = len(class_names)
    y_true = np.asarray(y_true, dtype=np.int64)
    y_pred = np.asarray(y_pred, dtype=np.int64)
    if y_true.shape != y_pred.shape or y_true.ndim != 1:
        raise ValueError(f"labels {y_true.shape} and predictions {y_pred.shape} must be 1-D alike")
    cm = metrics.confusion_matrix(y_true, y_pred, k)
    support = cm.sum(axis=1)
    model = class_metrics(cm, class_names)
    warning = single_class_warning(support, class_names)
    return {
        "format": REPORT_FORMAT,
        "version": REPORT_VERSION,
        **(extra or {}),
        **({"warning": warning} if warning else {}),
        "class_names": list(class_names),
        "label_distribution": distribution(support, class_names),
        "prediction_distribution": distribution(cm.sum(axis=0), class_names),
        **model,
        "baselines": {
            "majority": majority_baseline(support, train_counts, train_counts_from, class_names),
            "random": random_baseline(support, class_names),
        },
        "chance": shift_null(
            y_true, y_pred, n_classes=k, draws=null_draws, min_shift=min_shift, seed=seed
        ),
    }


# ---------------------------------------------------------------------------- calibration


def calibration_report(
    y_true: np.ndarray,
    probs_before: np.ndarray,
    probs_after: np.ndarray,
    calibration: dict[str, Any] | None,
) -> dict[str, Any]:
    """The report's `calibration`: the sidecar's method and parameters, and log-loss, ECE
    and reliability bins of the evaluated split before (softmax of the logits) and after
    (`apply_calibration`) it. probs (N, C), y_true (N,)."""
    from src.modelling.prediction.calibration import reliability_bins, scores

    cal = calibration or {}
    return {
        "method": cal.get("method", "none"),
        "params": cal.get("params") or {},
        "from": "sidecar" if calibration else "none in the sidecar (plain softmax)",
        "fitted_on": cal.get("fitted_on"),
        "fitted_n": cal.get("n"),
        "before": scores(probs_before, y_true),
        "after": scores(probs_after, y_true),
        "reliability": {
            "before": reliability_bins(probs_before, y_true),
            "after": reliability_bins(probs_after, y_true),
        },
    }


def summary(cm: np.ndarray) -> dict[str, float]:
    """macro-F1, balanced accuracy and accuracy of a confusion matrix."""
    return {
        "macro_f1": metrics.macro_f1(cm),
        "balanced_accuracy": metrics.balanced_accuracy(cm),
        "accuracy": metrics.accuracy(cm),
    }


def decision_report(
    y_true: np.ndarray,
    y_rule: np.ndarray,
    y_argmax_calibrated: np.ndarray,
    decision: dict[str, Any] | None,
    class_names: Sequence[str] = CLASS_NAMES,
) -> dict[str, Any]:
    """The report's `decision`: the sidecar's rule and the metrics of its classes
    (`decide` on the calibrated probabilities), plus the summary of the calibrated
    argmax (the `predicted` column of `saimp predict`). Labels and predictions (N,)."""
    k = len(class_names)
    dec = decision or {}
    cm = metrics.confusion_matrix(y_true, y_rule, k)
    return {
        "rule": dec.get("rule", "argmax"),
        **({"thresholds": dec["thresholds"]} if dec.get("thresholds") else {}),
        "fallback": dec.get("fallback", class_names[0]) if dec.get("thresholds") else None,
        "objective": dec.get("objective"),
        "from": "sidecar" if decision else "none in the sidecar (argmax)",
        "prediction_distribution": distribution(cm.sum(axis=0), class_names),
        **class_metrics(cm, class_names),
        "argmax_calibrated": summary(metrics.confusion_matrix(y_true, y_argmax_calibrated, k)),
    }


def format_calibration(report: dict[str, Any]) -> str:
    """Console lines: the calibration's effect, and argmax against the decision rule."""
    cal, dec = report["calibration"], report["decision"]
    split = report.get("split", "evaluated")
    b, a = cal["before"], cal["after"]
    if cal["method"] == "none":
        head = "calibration: none in the sidecar (plain softmax; saimp calibrate fits one)"
    else:
        fitted = f", fitted on {cal['fitted_on']}" if cal.get("fitted_on") else ""
        n = f" ({cal['fitted_n']:,} windows)" if cal.get("fitted_n") else ""
        head = f"calibration: {cal['method']} (the sidecar's{fitted}{n})"
    lines = [
        f"{head}: on the {split} split log-loss {b['log_loss']:.4f} -> {a['log_loss']:.4f}, "
        f"ECE {b['ece']:.4f} -> {a['ece']:.4f} (top label, 15 bins)"
    ]
    names = report["class_names"]
    w = 21
    head = f"{'prediction':<{w}} | {'macro-F1':>8} {'bal acc':>9} {'accuracy':>9} | F1 "
    head += " ".join(f"{n:>9}" for n in names)
    lines += [head, "-" * len(head)]
    rows = [
        ("argmax (raw model)", report, report["per_class"]),
        ("argmax (calibrated)", dec["argmax_calibrated"], None),
        (f"rule: {dec['rule']}", dec, dec["per_class"]),
    ]
    warning = report.get("warning")
    for label, m, per_class in rows:
        if warning:
            values = f"{'n/a':>8} {'n/a':>9} {'n/a':>9}"
        else:
            values = f"{m['macro_f1']:8.3f} {m['balanced_accuracy']:9.3f} {m['accuracy']:9.3f}"
        f1 = (
            " ".join(f"{per_class[n]['f1']:9.3f}" for n in names)
            if per_class
            else " ".join(f"{'':>9}" for _ in names)
        )
        lines.append(f"{label:<{w}} | {values} |    {f1}".rstrip())
    if dec.get("thresholds"):
        rule = ", ".join(f"{n} if p >= {t:.3f}" for n, t in dec["thresholds"].items())
        lines.append(
            f"rule: {rule} (the largest p / threshold among those reached), else "
            f"{dec.get('fallback') or names[0]}; chosen on val for {dec.get('objective')}"
        )
    return "\n".join(lines)


# ---------------------------------------------------------------------------- console


def _pct(x: float) -> str:
    return f"{100 * x:5.1f}%"


def format_report(report: dict[str, Any]) -> str:
    """The readable console table: per-class metrics, summary vs baselines, confusion matrix."""
    names = report["class_names"]
    maj, rnd = report["baselines"]["majority"], report["baselines"]["random"]
    w = max(12, *(len(n) for n in names))
    lines = []
    head = f"{'class':<{w}} | {'precision':>9} {'recall':>7} {'F1':>7} {'support':>9}"
    head += f" | {'F1 majority':>12} {'F1 random':>10}"
    lines += [head, "-" * len(head)]
    for name in names:
        pc = report["per_class"][name]
        lines.append(
            f"{name:<{w}} | {pc['precision']:9.3f} {pc['recall']:7.3f} {pc['f1']:7.3f} "
            f"{pc['support']:9,d} | {maj['per_class'][name]['f1']:12.3f} "
            f"{rnd['per_class'][name]['f1']:10.3f}"
        )
    lines.append("-" * len(head))
    warning = report.get("warning")
    for key, label in (
        ("macro_f1", "macro-F1"),
        ("balanced_accuracy", "balanced acc"),
        ("accuracy", "accuracy"),
    ):
        if warning:  # a single-class split: the numbers are in the JSON, not scores
            values = f"{'n/a':>7} {report['n_samples']:9,d} | {'n/a':>12} {'n/a':>10}"
        else:
            values = (
                f"{report[key]:7.3f} {report['n_samples']:9,d} | {maj[key]:12.3f} {rnd[key]:10.3f}"
            )
        lines.append(f"{label:<{w}} | {'':>9} {'':>7} {values}")
    if warning:
        lines.append(f"n/a: {warning}")
    lines.append(
        f"majority baseline: always {maj['predicted_class']} (most frequent in the "
        f"{maj['class_from']}); random baseline: guesses at the split's class frequencies "
        "(exact expectation)"
    )
    chance = report.get("chance")
    if chance and not warning:  # shifting one class against itself measures nothing
        z = "n/a" if chance["z"] is None else f"{chance['z']:.1f}"
        lines.append(
            f"chance level (predictions shifted >= {chance['min_shift']} windows, "
            f"{chance['draws']} draws): macro-F1 {chance['null_mean']:.3f} +/- "
            f"{chance['null_sd']:.3f}, 99.9th pct {chance['null_q999']:.3f} | model z {z}, "
            f"p {chance['p_value']:.4f}"
        )
    lines.append("")
    lines.append("confusion matrix (rows: true class, columns: predicted; row %)")
    cw = max(10, *(len(n) for n in names))
    lines.append(f"{'':<{w}} " + " ".join(f"{n:>{cw + 8}}" for n in names))
    for name, row in zip(names, report["confusion_matrix"], strict=True):
        total = sum(row) or 1
        cells = " ".join(f"{int(c):>{cw},d} {_pct(c / total)}" for c in row)
        lines.append(f"{name:<{w}} {cells}")
    dist = report["label_distribution"]
    lines.append(
        "labels: "
        + ", ".join(f"{n} {d['count']:,} ({_pct(d['fraction']).strip()})" for n, d in dist.items())
    )
    return "\n".join(lines)
