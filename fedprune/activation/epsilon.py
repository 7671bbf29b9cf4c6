"""Epsilon of the Laplace and Gaussian mechanisms for a given sensitivity and noise scale.

These are the textbook guarantees for *fresh* random noise added to a function with the stated
sensitivity (Dwork & Roth 2014, Thm 3.6 and Thm A.1; Balle & Wang 2018, Thm 8). Applied to the
scale fitted to a pruning perturbation they give only the "equivalent epsilon" analogy of Huang et
al. (2020): pruning adds no randomness, so no differential-privacy guarantee follows for it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from fedprune.activation.noise import Mechanism
from fedprune.activation.sensitivity import Sensitivity

__all__ = [
    "MechanismEpsilon",
    "gaussian_delta_analytic",
    "gaussian_epsilon_analytic",
    "gaussian_epsilon_classical",
    "laplace_epsilon",
    "mechanism_epsilon",
]


def _check_positive(name: str, value: float) -> None:
    if not value > 0.0 or not math.isfinite(value):
        raise ValueError(f"expected {name} > 0 and finite, got {value}")


def _check_delta(delta: float) -> None:
    if not 0.0 < delta < 1.0:
        raise ValueError(f"expected delta in (0, 1), got {delta}")


def laplace_epsilon(*, l1_sensitivity: float, scale: float) -> float:
    """``epsilon = Δ1 / b`` for i.i.d. Laplace(0, ``b``) noise on every output coordinate.

    Formal guarantees: (epsilon, 0)-DP for neighbours whose outputs differ by at most
    ``l1_sensitivity`` in L1 norm, if the noise is fresh and independent of the input.
    """
    _check_positive("l1_sensitivity", l1_sensitivity)
    _check_positive("scale", scale)
    return l1_sensitivity / scale


def gaussian_epsilon_classical(*, l2_sensitivity: float, sigma: float, delta: float) -> float:
    """``epsilon = Δ2 sqrt(2 ln(1.25 / δ)) / σ`` (solving the classical Gaussian-mechanism bound).

    Formal guarantees: (epsilon, delta)-DP **only when the result is < 1** (the classical theorem
    assumes epsilon < 1); a result >= 1 is outside the theorem and guarantees nothing. Use
    :func:`gaussian_epsilon_analytic` for a value valid at any epsilon.
    """
    _check_positive("l2_sensitivity", l2_sensitivity)
    _check_positive("sigma", sigma)
    _check_delta(delta)
    return l2_sensitivity * math.sqrt(2.0 * math.log(1.25 / delta)) / sigma


def gaussian_delta_analytic(*, epsilon: float, l2_sensitivity: float, sigma: float) -> float:
    """Smallest delta with (epsilon, delta)-DP for N(0, σ² I) noise (Balle & Wang 2018, Thm 8).

    ``delta = Φ(Δ/(2σ) - εσ/Δ) - exp(ε) Φ(-Δ/(2σ) - εσ/Δ)``, computed in log space for large ε.
    """
    _check_positive("l2_sensitivity", l2_sensitivity)
    _check_positive("sigma", sigma)
    if epsilon < 0:
        raise ValueError(f"expected epsilon >= 0, got {epsilon}")
    a = torch.tensor(l2_sensitivity / (2.0 * sigma), dtype=torch.float64)
    c = torch.tensor(epsilon * sigma / l2_sensitivity, dtype=torch.float64)
    first = torch.special.ndtr(a - c)
    second = torch.exp(epsilon + torch.special.log_ndtr(-a - c))
    return max(0.0, float(first - second))


def gaussian_epsilon_analytic(
    *, l2_sensitivity: float, sigma: float, delta: float, rel_tol: float = 1e-9
) -> float:
    """Smallest epsilon with (epsilon, delta)-DP for N(0, σ² I) noise of L2 sensitivity ``Δ2``.

    Exact (analytic Gaussian mechanism, Balle & Wang 2018, Thm 8), valid at any epsilon: found by
    bisection on :func:`gaussian_delta_analytic`, which decreases in epsilon, to ``rel_tol``.
    """
    _check_delta(delta)

    def delta_at(eps: float) -> float:
        return gaussian_delta_analytic(epsilon=eps, l2_sensitivity=l2_sensitivity, sigma=sigma)

    if delta_at(0.0) <= delta:
        return 0.0
    low, high = 0.0, 1.0
    while delta_at(high) > delta:
        low, high = high, 2.0 * high
    while high - low > rel_tol * high:
        mid = (low + high) / 2
        low, high = (low, mid) if delta_at(mid) <= delta else (mid, high)
    return high


@dataclass(frozen=True)
class MechanismEpsilon:
    """Epsilon of i.i.d. noise of one scale on a layer's output, for both neighbouring notions.

    Attributes
    ----------
    mechanism, scale:
        ``"laplace"`` with ``b`` or ``"gaussian"`` with ``σ`` (activation units).
    whole_input, one_coordinate:
        Epsilon for neighbours anywhere in the input box / differing in one input coordinate
        (``inf`` at scale 0). Laplace: ``Δ1 / b`` (delta 0). Gaussian: the analytic mechanism
        at ``delta``.
    delta:
        0 for Laplace, the given delta for Gaussian.
    classical_whole_input:
        Gaussian only: the classical ``Δ2 sqrt(2 ln(1.25/δ)) / σ``, a guarantee only if < 1.
    """

    mechanism: Mechanism
    scale: float
    whole_input: float
    one_coordinate: float
    delta: float
    classical_whole_input: float | None

    @property
    def classical_valid(self) -> bool | None:
        """Whether the classical Gaussian formula is inside its theorem (epsilon < 1)."""
        if self.classical_whole_input is None:
            return None
        return self.classical_whole_input < 1.0


def mechanism_epsilon(
    sensitivity: Sensitivity, *, mechanism: Mechanism, scale: float, delta: float
) -> MechanismEpsilon:
    """Epsilons of ``mechanism`` noise of ``scale`` on an output with ``sensitivity``.

    A formal guarantee only for fresh noise independent of the input; for a scale fitted to a
    pruning perturbation it is the "equivalent epsilon" analogy (no guarantee).
    """
    if scale < 0:
        raise ValueError(f"expected scale >= 0, got {scale}")
    if mechanism == "laplace":
        if scale == 0:
            return MechanismEpsilon(mechanism, scale, math.inf, math.inf, 0.0, None)
        return MechanismEpsilon(
            mechanism,
            scale,
            laplace_epsilon(l1_sensitivity=sensitivity.l1_whole_input, scale=scale),
            laplace_epsilon(l1_sensitivity=sensitivity.l1_one_coordinate, scale=scale),
            0.0,
            None,
        )
    if mechanism == "gaussian":
        if scale == 0:
            return MechanismEpsilon(mechanism, scale, math.inf, math.inf, delta, math.inf)
        return MechanismEpsilon(
            mechanism,
            scale,
            gaussian_epsilon_analytic(
                l2_sensitivity=sensitivity.l2_whole_input, sigma=scale, delta=delta
            ),
            gaussian_epsilon_analytic(
                l2_sensitivity=sensitivity.l2_one_coordinate, sigma=scale, delta=delta
            ),
            delta,
            gaussian_epsilon_classical(
                l2_sensitivity=sensitivity.l2_whole_input, sigma=scale, delta=delta
            ),
        )
    raise ValueError(f"unknown mechanism {mechanism!r}; expected 'laplace' or 'gaussian'")
