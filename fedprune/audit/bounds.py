"""Empirical epsilon lower bounds from an attack's ROC counts (Clopper-Pearson confidence).

If training is (epsilon, delta)-DP, any membership test at any threshold satisfies

    TPR <= e^epsilon FPR + delta   and   1 - FPR <= e^epsilon (1 - TPR) + delta,

so a test whose true TPR and FPR are known implies ``epsilon >= log((TPR - delta) / FPR)`` and
``epsilon >= log((1 - FPR - delta) / (1 - TPR))``. Estimated rates are replaced by one-sided
Clopper-Pearson bounds (lower for TPR, upper for FPR), each at level ``(1 - confidence) / 2``, so
that for one fixed threshold the bound holds with probability at least ``confidence``
(union bound), as in Jagielski et al. (2020) and Nasr et al. (2021).

Caveat: :func:`epsilon_lower_bound` takes the maximum over every threshold of the same scores,
which makes the reported figure somewhat optimistic (the threshold is chosen on the data it is
evaluated on); it is a standard audit figure, not a certified one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from scipy.stats import beta

from fedprune.audit.metrics import RocCurve

__all__ = ["EpsilonBound", "clopper_pearson", "epsilon_lower_bound"]


def clopper_pearson(
    successes: NDArray[np.int64] | int, trials: int, *, confidence: float
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Two-sided exact binomial interval ``(lower, upper)`` for ``successes`` of ``trials``.

    Each side is a one-sided bound at level ``(1 - confidence) / 2``; ``lower = 0`` at 0
    successes and ``upper = 1`` at ``trials`` successes.
    """
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"expected confidence in (0, 1), got {confidence}")
    if trials < 1:
        raise ValueError(f"expected trials >= 1, got {trials}")
    k = np.asarray(successes, dtype=np.float64)
    if np.any((k < 0) | (k > trials)):
        raise ValueError(f"expected successes in [0, {trials}]")
    half = (1.0 - confidence) / 2.0
    with np.errstate(invalid="ignore"):
        lower = np.where(k > 0, beta.ppf(half, k, trials - k + 1), 0.0)
        upper = np.where(k < trials, beta.ppf(1.0 - half, k + 1, trials - k), 1.0)
    return np.asarray(lower, dtype=np.float64), np.asarray(upper, dtype=np.float64)


@dataclass(frozen=True)
class EpsilonBound:
    """The largest epsilon lower bound over an attack's thresholds.

    Attributes
    ----------
    epsilon:
        ``max(0, best bound)``: 0 when no threshold beats ``delta`` with confidence.
    threshold:
        The score threshold achieving it (``None`` when ``epsilon`` is 0).
    tpr, fpr:
        Observed rates at that threshold (``None`` when ``epsilon`` is 0).
    direction:
        ``"tpr/fpr"`` or ``"tnr/fnr"``: which of the two DP inequalities gave the bound.
    delta, confidence:
        As passed.
    """

    epsilon: float
    threshold: float | None
    tpr: float | None
    fpr: float | None
    direction: str | None
    delta: float
    confidence: float


def _log_ratio(numerator: NDArray[np.float64], denominator: NDArray[np.float64]) -> NDArray:
    out = np.full(numerator.shape, -np.inf)
    ok = (numerator > 0) & (denominator > 0)
    out[ok] = np.log(numerator[ok] / denominator[ok])
    return out


def epsilon_lower_bound(curve: RocCurve, *, delta: float, confidence: float = 0.95) -> EpsilonBound:
    """The empirical epsilon lower bound implied by ``curve`` at ``delta`` (module docstring).

    Parameters
    ----------
    curve:
        Counts of the attack (members = records trained on).
    delta:
        The delta of the guarantee being audited, in ``[0, 1)``.
    confidence:
        Confidence of the Clopper-Pearson bounds, e.g. 0.95.
    """
    if not 0.0 <= delta < 1.0:
        raise ValueError(f"expected delta in [0, 1), got {delta}")
    tpr_lo, _ = clopper_pearson(curve.true_positives, curve.num_members, confidence=confidence)
    _, fpr_hi = clopper_pearson(curve.false_positives, curve.num_nonmembers, confidence=confidence)
    candidates = {
        "tpr/fpr": _log_ratio(tpr_lo - delta, fpr_hi),
        "tnr/fnr": _log_ratio(1.0 - fpr_hi - delta, 1.0 - tpr_lo),
    }
    best_dir, best_idx, best = None, -1, 0.0
    for direction, values in candidates.items():
        idx = int(np.argmax(values))
        if values[idx] > best:
            best_dir, best_idx, best = direction, idx, float(values[idx])
    if best_dir is None:
        return EpsilonBound(0.0, None, None, None, None, delta, confidence)
    threshold = float(curve.thresholds[best_idx])
    return EpsilonBound(
        epsilon=best,
        threshold=threshold if math.isfinite(threshold) else None,
        tpr=float(curve.tpr[best_idx]),
        fpr=float(curve.fpr[best_idx]),
        direction=best_dir,
        delta=delta,
        confidence=confidence,
    )
