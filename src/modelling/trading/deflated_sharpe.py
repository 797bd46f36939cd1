"""The deflated Sharpe ratio: is the best of N tried configurations better than luck?

Source: D. H. Bailey and M. López de Prado, "The Deflated Sharpe Ratio: Correcting for
Selection Bias, Backtest Overfitting and Non-Normality", Journal of Portfolio
Management 40(5), 2014. With N trials whose Sharpe ratios have variance V, the best
of N pure-luck trials is expected near

    SR0 = sqrt(V) ((1 - g) Z(1 - 1/N) + g Z(1 - 1/(N e))),   g = Euler's constant,

and the deflated Sharpe ratio is the probability that the true Sharpe ratio of the
selected trial exceeds SR0, given T observations with skewness s and kurtosis k:

    DSR = Phi((SR - SR0) sqrt(T - 1) / sqrt(1 - s SR + (k - 1) / 4 SR^2)).

Sharpe ratios here are per observation (per bar), not annualised.
"""

from __future__ import annotations

import math
from statistics import NormalDist

import numpy as np

EULER_GAMMA = 0.5772156649015329
_NORMAL = NormalDist()


def expected_max_sharpe(n_trials: int, variance: float) -> float:
    """SR0: the Sharpe ratio the best of `n_trials` skill-less trials reaches."""
    if n_trials < 2 or variance <= 0:
        return 0.0
    z1 = _NORMAL.inv_cdf(1.0 - 1.0 / n_trials)
    z2 = _NORMAL.inv_cdf(1.0 - 1.0 / (n_trials * math.e))
    return math.sqrt(variance) * ((1 - EULER_GAMMA) * z1 + EULER_GAMMA * z2)


def deflated_sharpe(
    returns: np.ndarray, *, n_trials: int, sharpe_variance: float
) -> dict[str, float | int | None]:
    """DSR of the selected trial's per-bar `returns` (float (T,)), against `n_trials`
    trials whose per-bar Sharpe ratios have variance `sharpe_variance`.

    Returns {"sharpe_per_bar", "expected_max_sharpe", "deflated_sharpe", "n_trials",
    "observations"}; the DSR is None when the returns are constant."""
    r = np.asarray(returns, np.float64)
    t = int(r.size)
    sd = float(r.std(ddof=1)) if t > 1 else 0.0
    out: dict[str, float | int | None] = {
        "n_trials": int(n_trials),
        "observations": t,
        "sharpe_per_bar": None,
        "expected_max_sharpe": expected_max_sharpe(n_trials, sharpe_variance),
        "deflated_sharpe": None,
    }
    if sd == 0 or t < 3:
        return out
    sr = float(r.mean() / sd)
    z = (r - r.mean()) / r.std()
    skew, kurt = float(np.mean(z**3)), float(np.mean(z**4))
    denom = 1.0 - skew * sr + (kurt - 1.0) / 4.0 * sr**2
    sr0 = float(out["expected_max_sharpe"])
    out["sharpe_per_bar"] = sr
    out["deflated_sharpe"] = _NORMAL.cdf(
        (sr - sr0) * math.sqrt(t - 1) / math.sqrt(max(denom, 1e-12))
    )
    return out
