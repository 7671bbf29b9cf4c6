"""Epsilon of the Laplace and Gaussian mechanisms on hand-checkable cases."""

import math

import pytest

from fedprune.activation.epsilon import (
    gaussian_delta_analytic,
    gaussian_epsilon_analytic,
    gaussian_epsilon_classical,
    laplace_epsilon,
    mechanism_epsilon,
)
from fedprune.activation.sensitivity import Sensitivity


def _phi(x: float) -> float:
    return 0.5 * (1 + math.erf(x / math.sqrt(2)))


def test_laplace_epsilon_hand_case() -> None:
    assert laplace_epsilon(l1_sensitivity=6.0, scale=2.0) == pytest.approx(3.0)
    with pytest.raises(ValueError, match="expected scale > 0"):
        laplace_epsilon(l1_sensitivity=6.0, scale=0.0)


def test_gaussian_classical_hand_case() -> None:
    # sigma = sqrt(2 ln(1.25 / 1e-5)) = sqrt(2 ln 125000) = 4.8448 gives epsilon 1 at Δ2 = 1.
    sigma = math.sqrt(2 * math.log(125_000))
    assert sigma == pytest.approx(4.8448, abs=1e-4)
    eps = gaussian_epsilon_classical(l2_sensitivity=1.0, sigma=sigma, delta=1e-5)
    assert eps == pytest.approx(1.0)
    assert gaussian_epsilon_classical(l2_sensitivity=2.0, sigma=sigma, delta=1e-5) == pytest.approx(
        2.0
    )
    with pytest.raises(ValueError, match=r"expected delta in \(0, 1\), got 0.0"):
        gaussian_epsilon_classical(l2_sensitivity=1.0, sigma=1.0, delta=0.0)


def test_gaussian_analytic_delta_hand_case() -> None:
    # Δ = σ = 1, ε = 1: Φ(0.5 - 1) - e Φ(-0.5 - 1) = 0.30854 - 2.71828 * 0.06681 = 0.12693.
    delta = gaussian_delta_analytic(epsilon=1.0, l2_sensitivity=1.0, sigma=1.0)
    assert delta == pytest.approx(_phi(-0.5) - math.e * _phi(-1.5))
    assert delta == pytest.approx(0.12693, abs=1e-5)


def test_gaussian_analytic_epsilon_inverts_delta_and_beats_classical() -> None:
    eps = gaussian_epsilon_analytic(l2_sensitivity=1.0, sigma=5.0, delta=1e-5)
    assert gaussian_delta_analytic(epsilon=eps, l2_sensitivity=1.0, sigma=5.0) == pytest.approx(
        1e-5, rel=1e-4
    )
    classical = gaussian_epsilon_classical(l2_sensitivity=1.0, sigma=5.0, delta=1e-5)
    assert classical < 1  # inside the classical theorem, where both are valid
    assert eps < classical  # the analytic mechanism is exact, so never worse
    # Far outside the classical range the analytic epsilon grows like Δ² / (2σ²).
    big = gaussian_epsilon_analytic(l2_sensitivity=100.0, sigma=1.0, delta=1e-5)
    assert big > 100.0**2 / 2
    assert gaussian_delta_analytic(epsilon=big, l2_sensitivity=100.0, sigma=1.0) <= 1e-5


def test_gaussian_analytic_epsilon_is_zero_for_huge_noise() -> None:
    assert gaussian_epsilon_analytic(l2_sensitivity=1e-9, sigma=1.0, delta=0.5) == 0.0


def test_mechanism_epsilon_picks_the_right_sensitivity() -> None:
    sens = Sensitivity(
        l1_whole_input=6.0,
        l2_whole_input=3.0,
        l1_one_coordinate=2.0,
        l2_one_coordinate=1.0,
        l2_per_coordinate_bound=3.0,
        l2_operator_bound=4.0,
    )
    lap = mechanism_epsilon(sens, mechanism="laplace", scale=2.0, delta=1e-5)
    assert (lap.whole_input, lap.one_coordinate, lap.delta) == (3.0, 1.0, 0.0)
    assert lap.classical_valid is None
    gau = mechanism_epsilon(sens, mechanism="gaussian", scale=2.0, delta=1e-5)
    assert gau.whole_input == pytest.approx(
        gaussian_epsilon_analytic(l2_sensitivity=3.0, sigma=2.0, delta=1e-5)
    )
    assert gau.one_coordinate == pytest.approx(
        gaussian_epsilon_analytic(l2_sensitivity=1.0, sigma=2.0, delta=1e-5)
    )
    assert gau.classical_whole_input == pytest.approx(3.0 * math.sqrt(2 * math.log(1.25e5)) / 2.0)
    assert gau.classical_valid is False
    zero = mechanism_epsilon(sens, mechanism="laplace", scale=0.0, delta=1e-5)
    assert zero.whole_input == math.inf
    with pytest.raises(ValueError, match="unknown mechanism 'uniform'"):
        mechanism_epsilon(sens, mechanism="uniform", scale=1.0, delta=1e-5)  # type: ignore[arg-type]
