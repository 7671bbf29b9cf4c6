"""The RDP accountant's wider Rényi orders: same epsilon as Opacus where its orders suffice,
tighter (and reachable) where they do not, and no "largest alpha" warning while calibrating."""

from __future__ import annotations

import warnings

import pytest
from opacus.accountants import RDPAccountant
from opacus.accountants.utils import get_noise_multiplier

from fedprune.privacy import calibrate_noise, epsilon_of
from fedprune.privacy.accounting import RDP_ORDERS

Q, STEPS, DELTA = 64 / 1293, 405, 1e-5  # the digits sweep's DP-SGD run


def _stock_epsilon(sigma: float) -> float:
    accountant = RDPAccountant()
    accountant.history = [(sigma, Q, STEPS)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(accountant.get_epsilon(delta=DELTA))


def test_orders_extend_opacus_defaults() -> None:
    assert set(RDPAccountant.DEFAULT_ALPHAS) < set(RDP_ORDERS)
    assert max(RDP_ORDERS) == 1024


@pytest.mark.parametrize("sigma", [0.8, 1.5, 4.22])
def test_equal_to_opacus_where_its_orders_suffice(sigma: float) -> None:
    assert epsilon_of([(sigma, Q, STEPS)], delta=DELTA, accountant="rdp") == _stock_epsilon(sigma)


@pytest.mark.parametrize("sigma", [30.0, 60.0])
def test_tighter_than_opacus_at_large_noise(sigma: float) -> None:
    ours = epsilon_of([(sigma, Q, STEPS)], delta=DELTA, accountant="rdp")
    assert 0 < ours < 0.95 * _stock_epsilon(sigma)


def test_small_epsilon_is_reachable() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(ValueError, match="privacy budget is too low"):
            get_noise_multiplier(target_epsilon=0.1, target_delta=DELTA, sample_rate=Q, steps=STEPS)
    sigma = calibrate_noise(
        target_epsilon=0.1, delta=DELTA, sample_rate=Q, steps=STEPS, accountant="rdp"
    )
    assert 0.09 <= epsilon_of([(sigma, Q, STEPS)], delta=DELTA, accountant="rdp") <= 0.1


def test_calibration_does_not_warn() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sigma = calibrate_noise(
            target_epsilon=1.0, delta=DELTA, sample_rate=Q, steps=STEPS, accountant="rdp"
        )
    assert sigma > 0
