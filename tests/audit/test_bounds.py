"""Empirical epsilon lower bounds on synthetic attacks whose true privacy is known."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import norm

from fedprune.audit import clopper_pearson, epsilon_lower_bound, roc_curve


def test_clopper_pearson_has_the_closed_form_at_the_extremes() -> None:
    n, conf = 50, 0.95
    half = (1 - conf) / 2
    lo, hi = clopper_pearson(np.array([0, n]), n, confidence=conf)
    assert lo[0] == 0.0 and hi[1] == 1.0
    assert hi[0] == pytest.approx(1 - half ** (1 / n))
    assert lo[1] == pytest.approx(half ** (1 / n))


def test_perfect_separation_gives_the_closed_form_bound() -> None:
    n, delta, conf = 100, 1e-5, 0.95
    half = (1 - conf) / 2
    bound = epsilon_lower_bound(
        roc_curve(np.arange(n) + 1000.0, np.arange(n)), delta=delta, confidence=conf
    )
    expected = math.log((half ** (1 / n) - delta) / (1 - half ** (1 / n)))
    assert bound.epsilon == pytest.approx(expected)
    assert bound.tpr == 1.0 and bound.fpr == 0.0


def test_randomized_response_bound_approaches_but_never_exceeds_its_epsilon() -> None:
    # Randomised response with epsilon 1 is exactly (1, 0)-DP: the member says 1 w.p. e/(1+e).
    eps, n = 1.0, 50_000
    rng = np.random.default_rng(1)
    p = math.exp(eps) / (1 + math.exp(eps))
    members = (rng.random(n) < p).astype(float)
    nonmembers = (rng.random(n) < 1 - p).astype(float)
    bound = epsilon_lower_bound(roc_curve(members, nonmembers), delta=0.0)
    assert 0.9 < bound.epsilon <= eps


def test_gaussian_mechanism_bound_stays_below_its_exact_epsilon() -> None:
    # Scores N(mu, 1) vs N(0, 1) are mu-GDP; its exact epsilon at delta solves
    # delta = Phi(-eps/mu + mu/2) - e^eps Phi(-eps/mu - mu/2).
    mu, delta = 2.0, 1e-5

    def delta_of(e: float) -> float:
        return float(norm.cdf(-e / mu + mu / 2) - math.exp(e) * norm.cdf(-e / mu - mu / 2))

    lo, hi = 0.0, 50.0
    for _ in range(200):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if delta_of(mid) > delta else (lo, mid)
    exact = hi
    rng = np.random.default_rng(2)
    bound = epsilon_lower_bound(
        roc_curve(rng.normal(mu, 1, 20_000), rng.normal(0, 1, 20_000)), delta=delta
    )
    assert 1.0 < bound.epsilon < exact


def test_indistinguishable_scores_give_a_near_zero_bound() -> None:
    rng = np.random.default_rng(3)
    bound = epsilon_lower_bound(roc_curve(rng.normal(size=2000), rng.normal(size=2000)), delta=1e-5)
    assert bound.epsilon < 0.2


def test_confidence_and_delta_are_validated() -> None:
    curve = roc_curve([1.0], [0.0])
    with pytest.raises(ValueError, match="delta"):
        epsilon_lower_bound(curve, delta=1.0)
    with pytest.raises(ValueError, match="confidence"):
        epsilon_lower_bound(curve, delta=0.0, confidence=1.0)
