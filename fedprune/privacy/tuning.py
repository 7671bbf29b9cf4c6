"""Accounting for private hyperparameter tuning: random search with a random number of trials.

Papernot & Steinke, "Hyperparameter Tuning with Renyi Differential Privacy" (ICLR 2022),
Theorem 2: let every trial ``Q`` (one training run plus its validation score) be
``(lambda, eps(lambda))``-RDP at every order, and run ``Q`` ``K`` times with ``K`` drawn from the
truncated negative binomial distribution ``D(eta, gamma)`` (``eta > -1``, ``0 < gamma < 1``),
releasing only the best-scoring trial. Then the whole search is ``(lambda, eps'(lambda))``-RDP
with

    eps'(lambda) = eps(lambda)
                   + (1 + eta) * (1 - 1/lambda_hat) * eps(lambda_hat)
                   + (1 + eta) * log(1/gamma) / lambda_hat
                   + log(E[K]) / (lambda - 1)

for every ``lambda_hat >= 1`` (we minimise over the accountant's orders), where
``E[K] = eta (1 - gamma) / (gamma (1 - gamma**eta))`` (``eta != 0``) and
``E[K] = (1/gamma - 1) / log(1/gamma)`` (``eta = 0``, the logarithmic distribution). ``eta = 1``
is the geometric distribution (``E[K] = 1/gamma``). The RDP curve is turned into
``(epsilon, delta)`` with Opacus's conversion, as the ``"rdp"`` accountant does.

The number of trials must stay secret and random: :func:`sample_num_trials` draws it from the
operating system's secure source, never from a seed.
"""

from __future__ import annotations

import math
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from opacus.accountants.analysis.rdp import compute_rdp, get_privacy_spent

from fedprune.privacy.accounting import RDP_ORDERS

__all__ = [
    "TrialMechanism",
    "TruncatedNegativeBinomial",
    "calibrate_tuned_noise",
    "sample_num_trials",
    "tuned_epsilon",
    "tuned_rdp",
]

_MAX_TRIALS = 100_000


@dataclass(frozen=True)
class TruncatedNegativeBinomial:
    """The distribution ``D(eta, gamma)`` of the number of trials ``K >= 1``.

    ``P[K = k] = (1 - gamma)**k / (gamma**-eta - 1) * prod_{l<k} (l + eta) / (l + 1)`` for
    ``eta != 0`` and ``(1 - gamma)**k / (k log(1/gamma))`` for ``eta = 0``.
    """

    eta: float
    gamma: float

    def __post_init__(self) -> None:
        if not self.eta > -1:
            raise ValueError(f"expected eta > -1, got {self.eta}")
        if not 0 < self.gamma < 1:
            raise ValueError(f"expected gamma in (0, 1), got {self.gamma}")

    @property
    def mean(self) -> float:
        """``E[K]``."""
        g, eta = self.gamma, self.eta
        if eta == 0:
            return (1 / g - 1) / math.log(1 / g)
        return eta * (1 - g) / (g * (1 - g**eta))

    def pmf(self, k: int) -> float:
        """``P[K = k]`` (0 for ``k < 1``)."""
        if k < 1:
            return 0.0
        p = self._first()
        for j in range(1, k):
            p *= self._ratio(j)
        return p

    def _first(self) -> float:
        g, eta = self.gamma, self.eta
        if eta == 0:
            return (1 - g) / math.log(1 / g)
        return (1 - g) * eta / (g**-eta - 1)

    def _ratio(self, k: int) -> float:
        """``P[K = k + 1] / P[K = k]``."""
        return (1 - self.gamma) * (k + self.eta) / (k + 1)

    def quantile(self, u: float) -> int:
        """The smallest ``k`` with ``P[K <= k] >= u`` (inverse CDF; capped at 100,000)."""
        if not 0 <= u < 1:
            raise ValueError(f"expected u in [0, 1), got {u}")
        k, p = 1, self._first()
        cdf = p
        while cdf < u and k < _MAX_TRIALS:
            p *= self._ratio(k)
            k += 1
            cdf += p
        return k


def sample_num_trials(distribution: TruncatedNegativeBinomial) -> int:
    """A secret draw of ``K`` (from :mod:`secrets`; never reproducible from a seed)."""
    u = secrets.randbits(53) / 2**53
    return distribution.quantile(u)


@dataclass(frozen=True)
class TrialMechanism:
    """What one trial releases about the private data.

    DP-SGD: ``steps`` Poisson-subsampled Gaussian steps at ``sample_rate`` and
    ``noise_multiplier``; plus the validation score, a count of correct predictions (sensitivity
    1) released with Gaussian noise of standard deviation ``score_noise`` (0: no score noise,
    only valid when the score is computed on public data). The two are composed (RDP adds).
    """

    noise_multiplier: float
    sample_rate: float
    steps: int
    score_noise: float

    def rdp(self, orders: Sequence[float] = RDP_ORDERS) -> np.ndarray:
        """The trial's RDP ``eps(lambda)`` at every order."""
        curve = np.asarray(
            compute_rdp(
                q=self.sample_rate,
                noise_multiplier=self.noise_multiplier,
                steps=self.steps,
                orders=list(orders),
            ),
            dtype=float,
        )
        if self.score_noise > 0:
            curve = curve + np.asarray(orders, dtype=float) / (2 * self.score_noise**2)
        return curve


def tuned_rdp(
    trial_rdp: np.ndarray, distribution: TruncatedNegativeBinomial, orders: Sequence[float]
) -> np.ndarray:
    """Papernot & Steinke's Theorem 2: the search's RDP at every order (module docstring).

    ``trial_rdp[i]`` is the trial's RDP at ``orders[i]``; ``lambda_hat`` ranges over ``orders``.
    """
    lam = np.asarray(orders, dtype=float)
    eta, gamma = distribution.eta, distribution.gamma
    hat = (1 + eta) * (1 - 1 / lam) * trial_rdp + (1 + eta) * math.log(1 / gamma) / lam
    return trial_rdp + float(hat.min()) + math.log(distribution.mean) / (lam - 1)


def tuned_epsilon(
    trial: TrialMechanism,
    distribution: TruncatedNegativeBinomial,
    *,
    delta: float,
    orders: Sequence[float] = RDP_ORDERS,
) -> float:
    """Total epsilon at ``delta`` of the whole random search (every trial and the selection)."""
    rdp = tuned_rdp(trial.rdp(orders), distribution, orders)
    epsilon, _ = get_privacy_spent(orders=list(orders), rdp=list(rdp), delta=delta)
    return float(epsilon)


def calibrate_tuned_noise(
    target_epsilon: float,
    *,
    make_trial: Callable[[float], TrialMechanism],
    distribution: TruncatedNegativeBinomial,
    delta: float,
    tolerance: float = 0.005,
) -> float:
    """The smallest noise multiplier (to ``tolerance`` relative) whose search costs at most
    ``target_epsilon`` in total; ``make_trial(sigma)`` builds the trial at noise ``sigma``.

    Raises ``ValueError`` when even ``sigma = 1000`` does not reach the target (the selection's
    own terms ``log(E[K]) / (lambda - 1)`` etc. already exceed it).
    """

    def cost(sigma: float) -> float:
        return tuned_epsilon(make_trial(sigma), distribution, delta=delta)

    low, high = 0.3, 1.0
    while cost(high) > target_epsilon:
        low, high = high, 2 * high
        if high > 1000:
            raise ValueError(
                f"private tuning cannot reach total epsilon {target_epsilon} at delta {delta} "
                f"with E[K] = {distribution.mean:.2f} trials"
            )
    while high - low > tolerance * high:
        mid = (low + high) / 2
        low, high = (mid, high) if cost(mid) > target_epsilon else (low, mid)
    return high
