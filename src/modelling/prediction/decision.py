"""The decision rule: from calibrated probabilities to one class per window (pure numpy).

The sidecar's ``"decision"`` section (None or absent: argmax) is
``{"rule": "argmax" | "thresholds", "thresholds": {"Stop": t, "Long": t, "SuperLong": t},
"objective": "macro_f1", "val": {"argmax": score, "thresholds": score, ...}}``.

Rule ``"thresholds"``: a window is the class with the largest p_c / t_c among the
classes whose probability reaches their threshold (p_c >= t_c); when none does, the
model is not confident and the window is the fallback class, Neutro (no trade). Ties
go to the lower class index. Rule ``"argmax"``: the class of the largest probability.

`fit_decision` chooses the thresholds on the calibrated validation probabilities by
coordinate ascent over per-class quantile grids, maximising an objective of
(y_true, y_pred, rows) (macro-F1 by default; any callable, e.g. a backtest's expectancy
looking up each window's return by its row, can be passed), and keeps argmax unless the
thresholds beat it out of sample on val.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from src.core.constants import CLASS_NAMES
from src.core.errors import UserError
from src.modelling.evaluation import metrics

RULES = ("argmax", "thresholds")
FALLBACK = 0
"""The class of a window where no class reaches its threshold: Neutro (no trade)."""
DEFAULT_OBJECTIVE = "macro_f1"
DEFAULT_FOLDS = 5
GRID_LEVELS = 1.0 - np.geomspace(1.0, 0.005, 24)
"""Quantile levels of a class's validation probabilities that make its candidate
thresholds: 0 (every window reaches it) to 0.995, denser towards the top, where the
thresholds of rare classes lie. 24 levels, not hundreds: a finer grid fits the
validation windows' noise (see README, "Calibrated probabilities and the decision rule")."""

Objective = Callable[[np.ndarray, np.ndarray, np.ndarray], float]
"""objective(y_true (n,) int, y_pred (n,) int, rows (n,) int) -> score, higher is better.

`rows` are the positions of the scored windows in the arrays given to `fit_decision`
(a cross-fitting fold scores a subset), so an objective can look up per-window data it
holds (a backtest's returns, timestamps); the named objectives ignore them."""


class DecisionError(UserError, ValueError):
    """A decision section that cannot be applied (unknown rule, class or threshold)."""


def _macro_f1(y_true: np.ndarray, y_pred: np.ndarray, rows: np.ndarray | None = None) -> float:
    return metrics.macro_f1(metrics.confusion_matrix(y_true, y_pred, len(CLASS_NAMES)))


def _balanced_accuracy(
    y_true: np.ndarray, y_pred: np.ndarray, rows: np.ndarray | None = None
) -> float:
    return metrics.balanced_accuracy(metrics.confusion_matrix(y_true, y_pred, len(CLASS_NAMES)))


OBJECTIVES: dict[str, Objective] = {
    "macro_f1": _macro_f1,
    "balanced_accuracy": _balanced_accuracy,
}
"""Named objectives (`saimp calibrate --objective`)."""


def resolve_objective(objective: str | Objective) -> tuple[str, Objective]:
    """(name, function) of a named objective or a callable (named by its __name__)."""
    if callable(objective):
        return getattr(objective, "__name__", "custom"), objective
    if objective not in OBJECTIVES:
        raise DecisionError(
            f"--objective: unknown objective {objective!r}; choose one of {', '.join(OBJECTIVES)}"
        )
    return objective, OBJECTIVES[objective]


# ---------------------------------------------------------------------------- applying


def threshold_vector(
    thresholds: dict[str, float], class_names: Sequence[str] = CLASS_NAMES
) -> np.ndarray:
    """(C,) float64: t_c for the classes named, +inf (never chosen by threshold) for the
    others. Raises `DecisionError` for an unknown class, the fallback class, or a
    threshold that is not a number in (0, 1]."""
    t = np.full(len(class_names), np.inf)
    for name, value in thresholds.items():
        if name not in class_names:
            raise DecisionError(
                f"the sidecar's decision: unknown class {name!r} in thresholds "
                f"(classes: {', '.join(class_names)})"
            )
        if class_names.index(name) == FALLBACK:
            raise DecisionError(
                f"the sidecar's decision: {name} is the fallback class and takes no threshold"
            )
        if not isinstance(value, int | float) or not (0 < value <= 1):
            raise DecisionError(
                f"the sidecar's decision: threshold of {name} must be in (0, 1], got {value!r}"
            )
        t[class_names.index(name)] = float(value)
    return t


def decide_thresholds(probs: np.ndarray, t: np.ndarray) -> np.ndarray:
    """int8 (N,): the class of the largest p_c / t_c among p_c >= t_c, else FALLBACK.

    probs (N, C); t (C,) thresholds (+inf, or 1: the class is never chosen; a softmax
    can round to exactly 1.0, which must not reach a class that was turned off)."""
    p = np.asarray(probs, np.float64)
    t = np.asarray(t, np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where((p >= t) & (t < 1.0), p / t, -np.inf)
    best = ratio.argmax(axis=1)
    confident = np.isfinite(ratio[np.arange(len(p)), best])
    return np.where(confident, best, FALLBACK).astype(np.int8)


def decide(probs: np.ndarray, decision: dict[str, Any] | None) -> np.ndarray:
    """Class index per row (int8, (N,)) from probabilities (N, C).

    `decision`: the sidecar's section; None, {} or rule "argmax" give the argmax.
    Raises `DecisionError` (one line naming the section) for a rule or thresholds it
    cannot apply. Evaluation and `saimp predict` both go through this function.
    """
    p = np.asarray(probs)
    rule = (decision or {}).get("rule", "argmax")
    if rule == "argmax":
        return p.argmax(axis=1).astype(np.int8)
    if rule == "thresholds":
        thresholds = (decision or {}).get("thresholds")
        if not isinstance(thresholds, dict) or not thresholds:
            raise DecisionError("the sidecar's decision: rule 'thresholds' without thresholds")
        return decide_thresholds(p, threshold_vector(thresholds))
    raise DecisionError(
        f"the sidecar's decision: unknown rule {rule!r} (known: {', '.join(RULES)}); "
        "refit it with saimp calibrate"
    )


# ---------------------------------------------------------------------------- fitting


def candidate_thresholds(p_c: np.ndarray, levels: np.ndarray = GRID_LEVELS) -> np.ndarray:
    """Sorted distinct candidate thresholds of one class: quantiles of its probabilities
    (N,) at `levels`, kept in (0, 1], and 1 (the class is never chosen: a probability
    below 1 never reaches it), so the search can also turn a class off."""
    q = np.quantile(np.asarray(p_c, np.float64), levels)
    return np.unique(np.append(q[(q > 0) & (q < 1)], 1.0))


def fit_thresholds(
    probs: np.ndarray,
    y: np.ndarray,
    objective: Objective = _macro_f1,
    *,
    levels: np.ndarray = GRID_LEVELS,
    sweeps: int = 4,
    rows: np.ndarray | None = None,
) -> tuple[np.ndarray, float]:
    """Thresholds (C,) (+inf for the fallback class) maximising `objective` on
    (probs (N, C), y (N,)) and that score. `rows` (N,): what the objective is told the
    windows' positions are (default 0..N-1).

    Coordinate ascent: start with each class predicted about as often as it occurs
    (t_c = its probabilities' (1 - prior_c) quantile), then, class by class, try every
    candidate threshold of that class with the others fixed and keep the best (a change
    only for a strictly better score), for up to `sweeps` sweeps or until a sweep
    changes nothing.
    """
    p = np.asarray(probs, np.float64)
    y = np.asarray(y, np.int64)
    n, c = p.shape
    classes = [k for k in range(c) if k != FALLBACK]
    prior = np.bincount(y, minlength=c) / max(n, 1)
    t = np.full(c, np.inf)
    grids = {}
    for k in classes:
        grids[k] = candidate_thresholds(p[:, k], levels)
        if grids[k].size == 0:
            continue
        start = np.quantile(p[:, k], min(max(1.0 - prior[k], 0.0), 1.0))
        t[k] = grids[k][np.abs(grids[k] - start).argmin()]
    rows = np.arange(n) if rows is None else np.asarray(rows)
    best = objective(y, decide_thresholds(p, t), rows)
    at = np.arange(n)
    for _ in range(sweeps):
        changed = False
        for k in classes:
            # The other classes' choice does not depend on t_k: compute it once, then
            # each candidate only decides where class k takes over (ties: lower index).
            others = t.copy()
            others[k] = np.inf
            with np.errstate(divide="ignore", invalid="ignore"):
                ratio = np.where(p >= others, p / others, -np.inf)
            other_class = ratio.argmax(axis=1)
            other_ratio = ratio[at, other_class]
            other_class = np.where(np.isfinite(other_ratio), other_class, FALLBACK)
            wins_ties = k < other_class
            for candidate in grids[k]:
                if candidate == t[k]:
                    continue
                mine = p[:, k] / candidate
                take = (p[:, k] >= candidate) & (
                    (mine > other_ratio) | ((mine == other_ratio) & wins_ties)
                )
                score = objective(y, np.where(take, k, other_class), rows)
                if score > best:
                    best, changed = score, True
                    t = t.copy()
                    t[k] = candidate
        if not changed:
            break
    return t, float(best)


def _as_dict(t: np.ndarray, class_names: Sequence[str]) -> dict[str, float]:
    return {class_names[k]: float(v) for k, v in enumerate(t) if np.isfinite(v)}


def fit_decision(
    probs: np.ndarray,
    y: np.ndarray,
    objective: str | Objective = DEFAULT_OBJECTIVE,
    *,
    folds: int = DEFAULT_FOLDS,
    levels: np.ndarray = GRID_LEVELS,
    class_names: Sequence[str] = CLASS_NAMES,
    reference: dict[str, float] | None = None,
) -> dict[str, Any]:
    """The sidecar's ``"decision"`` section, chosen on calibrated validation probabilities
    (N, C) and labels (N,) only.

    The thresholds are fitted on all of val (`fit_thresholds`); whether they beat argmax
    is judged out of sample: each of `folds` contiguous blocks of the stream is decided
    with thresholds fitted on the other blocks, and the objective of those out-of-fold
    decisions is compared with argmax's on all of val (argmax has nothing to fit). Three
    thresholds fitted to one split's noise can beat argmax there and lose on the next;
    this keeps ``{"rule": "argmax"}`` unless the gain survives windows the thresholds
    were not fitted on. `reference`: extra scores to record in ``"val"`` (e.g. the
    uncalibrated model's argmax).

    Section: ``{"rule", "thresholds" (rule "thresholds" only), "objective", "val":
    {"argmax", "thresholds" (in-sample), "thresholds_cross_fitted", ...}, "fitted_on",
    "n"}``.
    """
    name, fn = resolve_objective(objective)
    p = np.asarray(probs, np.float64)
    y = np.asarray(y, np.int64)
    if p.ndim != 2 or y.shape != (p.shape[0],):
        raise ValueError(f"probabilities {p.shape} and labels {y.shape} must be (N, C) and (N,)")
    if y.size < 2:
        raise DecisionError(f"the decision rule needs validation windows; got {y.size}")
    everything = np.arange(y.size)
    argmax_score = float(fn(y, decide(p, None), everything))
    t, in_sample = fit_thresholds(p, y, fn, levels=levels)
    blocks = [b for b in np.array_split(np.arange(y.size), max(1, min(folds, y.size))) if b.size]
    if len(blocks) >= 2:
        out_of_fold = np.empty(y.size, np.int8)
        for block in blocks:
            rest = np.ones(y.size, bool)
            rest[block] = False
            t_rest, _ = fit_thresholds(
                p[rest], y[rest], fn, levels=levels, rows=np.flatnonzero(rest)
            )
            out_of_fold[block] = decide_thresholds(p[block], t_rest)
        cross_fitted = float(fn(y, out_of_fold, everything))
    else:
        cross_fitted = in_sample
    use = cross_fitted > argmax_score and in_sample > argmax_score
    section: dict[str, Any] = {"rule": "thresholds" if use else "argmax"}
    if use:
        section["thresholds"] = _as_dict(t, class_names)
    else:
        section["candidate_thresholds"] = _as_dict(t, class_names)
    val = {"argmax": argmax_score, "thresholds": in_sample, "thresholds_cross_fitted": cross_fitted}
    return {
        **section,
        "objective": name,
        "val": {**val, **(reference or {})},
        "selection": f"thresholds only if they beat argmax on val out of sample "
        f"({len(blocks)}-fold cross-fitted on contiguous blocks)",
        "fallback": class_names[FALLBACK],
        "fitted_on": "val",
        "n": int(y.size),
    }


def score_of(objective: str | Objective, y: np.ndarray, y_pred: np.ndarray) -> float:
    """The objective's score of predictions (N,) against labels (N,), all windows."""
    y = np.asarray(y)
    return float(resolve_objective(objective)[1](y, np.asarray(y_pred), np.arange(y.size)))
