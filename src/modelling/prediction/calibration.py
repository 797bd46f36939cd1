"""Calibrated class probabilities from a model's logits (pure numpy, no torch, no I/O).

Why: SAIMP is trained with a class-weighted cross-entropy (default weights
[1, 10, 10, 20]). The minimiser of a weighted cross-entropy is not p(c|x) but
p_w(c|x) = w_c p(c|x) / sum_k w_k p(k|x), so the softmax of the logits overstates the
weighted classes: on a random walk whose test windows are 76% Neutro, the plain argmax
said Neutro for 1% of them. A calibration maps logits z (N, C) to corrected logits, and
`apply_calibration` returns their softmax.

The sidecar's ``"calibration"`` section (None or absent: plain softmax) is
``{"method": METHOD, "params": {...}, "val": {...}, "fitted_on": "val", "n": windows}``:

- ``"none"``: softmax(z).
- ``"log_prior"`` (params ``{"class_weights": [w_c]}``): softmax(z - log w). Undoes the
  class weighting exactly when the model reached the weighted-loss optimum (the
  logit adjustment of Menon et al. 2021, "Long-tail learning via logit adjustment",
  ICLR, applied post hoc: the class-weighted cross-entropy optimum is
  p_w(c|x) ∝ w_c p(c|x)). A weight <= 0 gets no correction (the loss never saw that
  class, so there is nothing to undo).
- ``"temperature"`` (params ``{"temperature": T}``): softmax(z / T), one scalar T > 0
  (Guo et al. 2017, "On Calibration of Modern Neural Networks", ICML, sec. 4.2).
- ``"log_prior_temperature"`` (params ``{"class_weights": [w_c], "temperature": T}``):
  softmax((z - log w) / T).
- ``"vector"`` (params ``{"scale": [a_c], "bias": [b_c]}``): softmax(a * z + b), a
  per-class scale and bias (Guo et al. 2017's vector scaling).

Fitting (`fit_calibration`) minimises the unweighted negative log-likelihood on the
validation split; `expected_calibration_error` is Guo et al.'s top-label ECE with 15
equal-width confidence bins. Why the choice among the candidates is made on
cross-fitted log-loss, see `fit_calibration`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from src.core.errors import UserError

METHODS = ("none", "log_prior", "temperature", "log_prior_temperature", "vector")
"""Every calibration method `apply_calibration` knows, simplest first."""
N_BINS = 15
"""Bins of the ECE and the reliability diagram (Guo et al. 2017)."""
DEFAULT_FOLDS = 5
"""Contiguous blocks of the validation stream used to cross-fit the candidates."""
_T_MIN, _T_MAX = 1e-3, 1e3
"""Bounds of a fitted temperature (a model so overconfident that T = 1000 is not enough
is a broken model, not a calibration problem)."""
_P_FLOOR = 1e-15
"""Smallest probability a log-loss counts (a sure wrong answer costs 34.5 nats, not inf)."""


class CalibrationError(UserError, ValueError):
    """A calibration section that cannot be applied (unknown method, wrong shapes)."""


# ---------------------------------------------------------------------------- applying


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax in float64, shape (N, C) -> (N, C)."""
    z = np.asarray(logits, np.float64)
    if z.size == 0:
        return z.copy()
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def log_prior_offsets(class_weights: Sequence[float]) -> np.ndarray:
    """log w_c per class (C,) float64; 0 for a weight <= 0 (nothing to undo there)."""
    w = np.asarray(class_weights, np.float64)
    if w.ndim != 1 or not np.isfinite(w).all():
        raise CalibrationError(
            f"the sidecar's calibration: class_weights must be a list of finite numbers, got {w}"
        )
    return np.log(np.where(w > 0, w, 1.0))


def _vector(params: dict[str, Any], key: str, c: int) -> np.ndarray:
    v = np.asarray(params.get(key), np.float64)
    if v.shape != (c,) or not np.isfinite(v).all():
        raise CalibrationError(
            f"the sidecar's calibration: params.{key} must be {c} finite numbers, "
            f"got {params.get(key)!r}"
        )
    return v


def _temperature(params: dict[str, Any]) -> float:
    t = params.get("temperature")
    if not isinstance(t, int | float) or not math.isfinite(t) or t <= 0:
        raise CalibrationError(
            f"the sidecar's calibration: params.temperature must be a number > 0, got {t!r}"
        )
    return float(t)


def calibrated_logits(logits: np.ndarray, calibration: dict[str, Any] | None) -> np.ndarray:
    """The corrected logits (N, C) float64 whose softmax `apply_calibration` returns.

    Raises `CalibrationError` (one line, naming the section) for an unknown method or
    parameters of the wrong shape.
    """
    z = np.asarray(logits, np.float64)
    if z.ndim != 2:
        raise ValueError(f"logits must be (N, C), got shape {z.shape}")
    method = (calibration or {}).get("method", "none")
    params = (calibration or {}).get("params") or {}
    c = z.shape[1]
    if method == "none":
        return z
    if method in ("log_prior", "log_prior_temperature"):
        offsets = log_prior_offsets(_vector(params, "class_weights", c))
        z = z - offsets
        return z / _temperature(params) if method == "log_prior_temperature" else z
    if method == "temperature":
        return z / _temperature(params)
    if method == "vector":
        return z * _vector(params, "scale", c) + _vector(params, "bias", c)
    raise CalibrationError(
        f"the sidecar's calibration: unknown method {method!r} (known: {', '.join(METHODS)}); "
        "refit it with saimp calibrate"
    )


def apply_calibration(logits: np.ndarray, calibration: dict[str, Any] | None) -> np.ndarray:
    """Probabilities (N, C) float64 from logits (N, C) under the sidecar's calibration.

    `calibration`: the sidecar's section (see the module docstring); None, {} or method
    "none" give the plain softmax. Raises `CalibrationError` for a section it cannot
    apply. Evaluation and `saimp predict` both go through this function, so they give
    the same probabilities for the same logits.
    """
    return softmax(calibrated_logits(logits, calibration))


# ---------------------------------------------------------------------------- scores


def log_loss(probs: np.ndarray, y: np.ndarray) -> float:
    """Mean negative log-likelihood (nats) of the true classes: unweighted, each window
    counts once. probs (N, C), y (N,) int; probabilities below 1e-15 count as 1e-15."""
    p = np.asarray(probs, np.float64)
    y = np.asarray(y, np.int64)
    if y.size == 0:
        return math.nan
    return float(-np.log(np.maximum(p[np.arange(y.size), y], _P_FLOOR)).mean())


def _binned(probs: np.ndarray, y: np.ndarray, n_bins: int) -> tuple[np.ndarray, ...]:
    """(edges (B+1,), count (B,), mean confidence (B,), accuracy (B,)); NaN when empty."""
    p = np.asarray(probs, np.float64)
    y = np.asarray(y, np.int64)
    conf = p.max(axis=1)
    correct = (p.argmax(axis=1) == y).astype(np.float64)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    # edges[m] < conf <= edges[m + 1], compared with the edges themselves (as Guo et
    # al.'s code does), so a confidence on an edge goes to the bin below it.
    idx = np.clip(np.searchsorted(edges, conf, side="left") - 1, 0, n_bins - 1)
    count = np.bincount(idx, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_conf = np.bincount(idx, weights=conf, minlength=n_bins) / count
        acc = np.bincount(idx, weights=correct, minlength=n_bins) / count
    return edges, count, mean_conf, acc


def reliability_bins(probs: np.ndarray, y: np.ndarray, n_bins: int = N_BINS) -> dict[str, Any]:
    """Top-label reliability per confidence bin (Guo et al. 2017, sec. 2).

    The confidence of a window is its largest probability, its prediction that class;
    bin m (1-based) holds confidences in ((m - 1) / n_bins, m / n_bins]. probs (N, C),
    y (N,). Returns ``{"edges": (n_bins + 1,), "count": (n_bins,) int, "confidence":
    mean confidence, "accuracy": fraction correct}`` as lists (None for an empty bin),
    JSON-ready.
    """
    edges, count, mean_conf, acc = _binned(probs, y, n_bins)

    def listed(v: np.ndarray) -> list[float | None]:
        return [float(x) if np.isfinite(x) else None for x in v]

    return {
        "edges": edges.tolist(),
        "count": count.tolist(),
        "confidence": listed(mean_conf),
        "accuracy": listed(acc),
    }


def expected_calibration_error(probs: np.ndarray, y: np.ndarray, n_bins: int = N_BINS) -> float:
    """Top-label ECE (Guo et al. 2017, eq. 3): sum over bins of (n_b / N) |acc_b - conf_b|,
    in [0, 1]; `n_bins` equal-width bins of the largest probability (`reliability_bins`).
    probs (N, C), y (N,); NaN for N = 0."""
    _, count, mean_conf, acc = _binned(probs, y, n_bins)
    if count.sum() == 0:
        return math.nan
    gap = np.where(count > 0, np.abs(acc - mean_conf), 0.0)
    return float(np.sum(count * gap) / count.sum())


def scores(probs: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """{"log_loss", "ece"} of probabilities (N, C) against labels (N,)."""
    return {"log_loss": log_loss(probs, y), "ece": expected_calibration_error(probs, y)}


# ---------------------------------------------------------------------------- fitting


def fit_temperature(logits: np.ndarray, y: np.ndarray) -> float:
    """The T > 0 minimising the mean NLL of softmax(logits / T) (Guo et al. 2017).

    The NLL is convex in beta = 1 / T (a log-sum-exp of a linear function minus a linear
    function): its derivative mean(E_p[z] - z_y) increases with beta, its second
    derivative is mean(Var_p[z]). Newton's method on beta, kept inside a shrinking
    bracket of the root (a bisection step when Newton leaves it), converges in a few
    steps; T is clipped to [1e-3, 1e3].
    """
    z = np.asarray(logits, np.float64)
    y = np.asarray(y, np.int64)
    z_true = z[np.arange(y.size), y]

    def slope_curvature(beta: float) -> tuple[float, float]:
        p = softmax(beta * z)
        mean = (p * z).sum(axis=1)
        var = (p * z * z).sum(axis=1) - mean * mean
        return float(np.mean(mean - z_true)), float(np.mean(var))

    lo, hi = 1 / _T_MAX, 1 / _T_MIN
    if slope_curvature(lo)[0] >= 0:
        return _T_MAX
    if slope_curvature(hi)[0] <= 0:
        return _T_MIN
    beta = 1.0
    for _ in range(100):
        g, h = slope_curvature(beta)
        if g > 0:
            hi = beta
        else:
            lo = beta
        if abs(g) < 1e-12 or hi - lo < 1e-12 * hi:
            break
        step = beta - g / h if h > 0 else math.nan
        beta = step if lo < step < hi else 0.5 * (lo + hi)
    return float(1.0 / beta)


def fit_vector(
    logits: np.ndarray, y: np.ndarray, *, max_iter: int = 100, tol: float = 1e-10
) -> tuple[np.ndarray, np.ndarray]:
    """Per-class scale a (C,) and bias b (C,) minimising the mean NLL of softmax(a z + b)
    (Guo et al. 2017's vector scaling).

    The NLL is convex in (a, b) (the corrected logits are linear in them), so Newton's
    method with a backtracking line search finds the optimum in a few steps; the
    Hessian is singular along (a, b) -> (a, b + const) and is solved by least squares.
    Starts at a = 1, b = 0 (no change) and never ends worse than there.
    """
    z = np.asarray(logits, np.float64)
    y = np.asarray(y, np.int64)
    n, c = z.shape
    onehot = np.zeros_like(z)
    onehot[np.arange(n), y] = 1.0

    def nll(theta: np.ndarray) -> float:
        s = z * theta[:c] + theta[c:]
        s = s - s.max(axis=1, keepdims=True)
        return float(np.mean(np.log(np.exp(s).sum(axis=1)) - s[np.arange(n), y]))

    theta = np.concatenate([np.ones(c), np.zeros(c)])
    value = nll(theta)
    for _ in range(max_iter):
        p = softmax(z * theta[:c] + theta[c:])
        r = p - onehot  # d NLL / d corrected logits, per window
        grad = np.concatenate([(r * z).mean(axis=0), r.mean(axis=0)])
        if np.abs(grad).max() < tol:
            break
        # H = mean_n J_n^T (diag p - p p^T) J_n with J_n = [diag(z_n), I], without
        # materialising an (N, C, C) array.
        zp = z * p
        h = np.empty((2 * c, 2 * c))
        h[:c, :c] = np.diag((z * zp).mean(axis=0)) - zp.T @ zp / n
        h[:c, c:] = np.diag(zp.mean(axis=0)) - zp.T @ p / n
        h[c:, :c] = h[:c, c:].T
        h[c:, c:] = np.diag(p.mean(axis=0)) - p.T @ p / n
        step = np.linalg.lstsq(h, -grad, rcond=None)[0]
        if not np.isfinite(step).all() or float(step @ grad) >= 0:
            step = -grad  # not a descent direction: fall back to the gradient
        t = 1.0
        while t > 1e-8:
            candidate = theta + t * step
            new = nll(candidate)
            if np.isfinite(new) and new <= value + 1e-4 * t * float(step @ grad):
                break
            t *= 0.5
        else:
            break  # no decrease along the step: at the optimum within float noise
        theta, improved = candidate, value - new
        value = new
        if improved < tol:
            break
    return theta[:c].copy(), theta[c:].copy()


def fit_method(
    method: str, logits: np.ndarray, y: np.ndarray, class_weights: Sequence[float] | None
) -> dict[str, Any]:
    """The calibration section ({"method", "params"}) of `method` fitted on (logits, y).

    `class_weights`: the weights of the training loss (needed by the log-prior methods).
    """
    z = np.asarray(logits, np.float64)
    if method == "none":
        return {"method": "none", "params": {}}
    if method in ("log_prior", "log_prior_temperature"):
        if class_weights is None:
            raise CalibrationError(f"calibration {method!r} needs the class weights of the loss")
        weights = [float(w) for w in class_weights]
        if method == "log_prior":
            return {"method": method, "params": {"class_weights": weights}}
        t = fit_temperature(z - log_prior_offsets(weights), y)
        return {"method": method, "params": {"class_weights": weights, "temperature": t}}
    if method == "temperature":
        return {"method": method, "params": {"temperature": fit_temperature(z, y)}}
    if method == "vector":
        a, b = fit_vector(z, y)
        return {"method": method, "params": {"scale": a.tolist(), "bias": b.tolist()}}
    raise CalibrationError(f"unknown calibration method {method!r} (known: {', '.join(METHODS)})")


def contiguous_folds(n: int, folds: int) -> list[np.ndarray]:
    """`folds` contiguous blocks of range(n) (stream order), as index arrays."""
    return [b for b in np.array_split(np.arange(n), max(1, min(folds, n))) if b.size]


def cross_fitted_probs(
    method: str,
    logits: np.ndarray,
    y: np.ndarray,
    class_weights: Sequence[float] | None,
    folds: int = DEFAULT_FOLDS,
) -> np.ndarray:
    """Out-of-fold probabilities (N, C): each block of the stream calibrated by `method`
    fitted on the other blocks. With one fold, the in-sample fit."""
    z = np.asarray(logits, np.float64)
    y = np.asarray(y, np.int64)
    blocks = contiguous_folds(len(y), folds)
    if len(blocks) < 2:
        return apply_calibration(z, fit_method(method, z, y, class_weights))
    out = np.empty_like(z)
    for block in blocks:
        rest = np.ones(len(y), bool)
        rest[block] = False
        section = fit_method(method, z[rest], y[rest], class_weights)
        out[block] = apply_calibration(z[block], section)
    return out


def fit_calibration(
    logits: np.ndarray,
    y: np.ndarray,
    class_weights: Sequence[float] | None,
    *,
    methods: Sequence[str] = METHODS,
    folds: int = DEFAULT_FOLDS,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Fit every candidate on the validation logits (N, C) and labels (N,); keep the one
    of lowest cross-fitted log-loss. Returns the sidecar's ``"calibration"`` section.

    Why log-loss: it is a strictly proper scoring rule, minimised only by the true
    conditional probabilities, and it is what every candidate was fitted to minimise; ECE
    is reported beside it but is not proper (a constant forecast of the base rates has
    ECE 0) and depends on the binning.

    Why cross-fitted: the candidates are nested (vector scaling contains every other
    one), so on the windows they were fitted on the largest always wins. Each candidate
    is therefore scored on `folds` contiguous blocks of the validation stream (contiguous
    because neighbouring windows overlap and share their label horizon), each block with
    the candidate fitted on the other blocks; the winner is refitted on all of val. The
    candidates have 0 to 2C parameters against thousands of windows, so the refit
    changes little, and the in-sample optimum is never worse than the cross-fitted
    score: the chosen method's val log-loss is never worse than `none`'s (checked, with
    `none` kept otherwise). The test split is never used.

    The section: ``{"method", "params", "val": {candidate: {"log_loss", "ece"}}
    (cross-fitted scores), "val_fit": {"log_loss", "ece"} (the chosen fit on all of val),
    "selection", "fitted_on": "val", "n": N}``. Raises `CalibrationError` when N < 2.
    A log-prior candidate is skipped when `class_weights` is None.
    """
    z = np.asarray(logits, np.float64)
    y = np.asarray(y, np.int64)
    if z.ndim != 2 or y.shape != (z.shape[0],):
        raise ValueError(f"logits {z.shape} and labels {y.shape} must be (N, C) and (N,)")
    if y.size < 2:
        raise CalibrationError(f"calibration needs validation windows; got {y.size}")
    if not np.isfinite(z).all():
        raise CalibrationError("calibration: the model's validation logits are not all finite")
    candidates = [
        m
        for m in methods
        if class_weights is not None or m not in ("log_prior", "log_prior_temperature")
    ]
    if "none" not in candidates:
        candidates.insert(0, "none")
    val: dict[str, dict[str, float]] = {}
    for method in candidates:
        probs = cross_fitted_probs(method, z, y, class_weights, folds)
        val[method] = scores(probs, y)
        if log is not None:
            log(f"{method}: cross-fitted log-loss {val[method]['log_loss']:.4f}")
    best = min(candidates, key=lambda m: (val[m]["log_loss"], candidates.index(m)))
    section = fit_method(best, z, y, class_weights)
    fit = scores(apply_calibration(z, section), y)
    before = scores(softmax(z), y)
    if not fit["log_loss"] <= before["log_loss"]:  # only through float noise; never worse
        best, section, fit = "none", fit_method("none", z, y, None), before
    return {
        **section,
        "val": val,
        "val_fit": fit,
        "selection": f"lowest log-loss, {len(contiguous_folds(y.size, folds))}-fold "
        "cross-fitted on contiguous blocks of val; refitted on all of val",
        "fitted_on": "val",
        "n": int(y.size),
    }
