"""Papernot & Steinke's tuning accountant against hand computations of the paper's formulas."""

from __future__ import annotations

import math

import numpy as np
import pytest
from opacus.accountants.analysis.rdp import compute_rdp, get_privacy_spent

from fedprune.privacy.accounting import RDP_ORDERS
from fedprune.privacy.tuning import (
    TrialMechanism,
    TruncatedNegativeBinomial,
    calibrate_tuned_noise,
    sample_num_trials,
    tuned_epsilon,
    tuned_rdp,
)


@pytest.mark.parametrize(("eta", "gamma"), [(1.0, 0.25), (0.0, 0.1), (0.5, 0.05), (-0.5, 0.3)])
def test_distribution_mean_and_pmf_agree(eta: float, gamma: float) -> None:
    d = TruncatedNegativeBinomial(eta=eta, gamma=gamma)
    pmf = [d.pmf(k) for k in range(1, 4000)]
    assert sum(pmf) == pytest.approx(1.0, abs=1e-9)
    assert sum(k * p for k, p in enumerate(pmf, 1)) == pytest.approx(d.mean, rel=1e-6)


def test_hand_computed_distributions() -> None:
    geometric = TruncatedNegativeBinomial(eta=1.0, gamma=0.25)
    assert geometric.mean == pytest.approx(4.0)  # 1 / gamma
    assert geometric.pmf(1) == pytest.approx(0.25)  # gamma (1 - gamma)^(k - 1)
    assert geometric.pmf(3) == pytest.approx(0.25 * 0.75**2)
    log = TruncatedNegativeBinomial(eta=0.0, gamma=0.1)
    assert log.mean == pytest.approx(9 / math.log(10))  # (1/gamma - 1) / log(1/gamma)
    assert log.pmf(2) == pytest.approx(0.9**2 / (2 * math.log(10)))
    assert geometric.quantile(0.0) == 1 and geometric.quantile(0.25) == 1
    assert geometric.quantile(0.2500001) == 2  # P[K <= 1] = 0.25
    draws = [sample_num_trials(geometric) for _ in range(400)]
    assert min(draws) >= 1 and 2.5 < np.mean(draws) < 6  # mean 4, std ~3.5/sqrt(400)


def test_tuned_rdp_is_the_theorem_on_a_gaussian_curve() -> None:
    # A Gaussian mechanism of sensitivity 1 and noise s has RDP eps(l) = l / (2 s^2).
    s, eta, gamma = 3.0, 1.0, 0.25
    orders = [1.5, 2.0, 4.0, 8.0, 16.0, 32.0]
    curve = np.array([lam / (2 * s**2) for lam in orders])
    got = tuned_rdp(curve, TruncatedNegativeBinomial(eta, gamma), orders)
    # By hand: min over lam_hat of (1+eta)(1-1/lh) lh/(2 s^2) + (1+eta) log(1/gamma)/lh.
    hat = min(2 * (1 - 1 / lh) * lh / 18 + 2 * math.log(4) / lh for lh in orders)
    assert hat == pytest.approx(2 * (1 - 1 / 4) * 4 / 18 + 2 * math.log(4) / 4)  # at lh = 4
    for lam, value in zip(orders, got, strict=True):
        assert value == pytest.approx(lam / 18 + hat + math.log(4.0) / (lam - 1))


def test_tuned_epsilon_exceeds_one_trial_and_grows_with_expected_trials() -> None:
    trial = TrialMechanism(noise_multiplier=1.0, sample_rate=0.01, steps=1000, score_noise=10.0)
    single_rdp = (
        np.array(compute_rdp(q=0.01, noise_multiplier=1.0, steps=1000, orders=list(RDP_ORDERS)))
        + np.array(RDP_ORDERS) / 200
    )
    single, _ = get_privacy_spent(orders=list(RDP_ORDERS), rdp=list(single_rdp), delta=1e-5)
    np.testing.assert_allclose(trial.rdp(), single_rdp)
    few = tuned_epsilon(trial, TruncatedNegativeBinomial(1.0, 0.5), delta=1e-5)
    many = tuned_epsilon(trial, TruncatedNegativeBinomial(1.0, 0.05), delta=1e-5)
    assert single < few < many


def test_calibration_hits_the_total_target() -> None:
    dist = TruncatedNegativeBinomial(1.0, 0.25)

    def make(sigma: float) -> TrialMechanism:
        return TrialMechanism(sigma, 0.004, 3000, 10.0)

    sigma = calibrate_tuned_noise(3.0, make_trial=make, distribution=dist, delta=1e-5)
    total = tuned_epsilon(make(sigma), dist, delta=1e-5)
    assert 2.9 < total <= 3.0
    with pytest.raises(ValueError, match="cannot reach"):
        calibrate_tuned_noise(0.01, make_trial=make, distribution=dist, delta=1e-5)


def test_rejects_bad_parameters() -> None:
    with pytest.raises(ValueError, match="eta > -1"):
        TruncatedNegativeBinomial(eta=-1.0, gamma=0.5)
    with pytest.raises(ValueError, match=r"gamma in \(0, 1\)"):
        TruncatedNegativeBinomial(eta=1.0, gamma=1.0)
