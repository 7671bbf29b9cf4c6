"""Refusals at the accounting boundary: the approximate ``gdp`` accountant and a delta >= 1/n."""

from __future__ import annotations

import math
from typing import Any

import pytest

from fedprune.config import RunConfig
from fedprune.privacy import DPPlan, PrivacyLedger, calibrate_noise, check_delta, epsilon_of
from fedprune.privacy.accounting import AccountantName, validate_accountant

GDP_REFUSED = r"'gdp' accountant is refused: .*approximation.*not a guarantee.*under-reports"


def test_gdp_is_no_accountant_name() -> None:
    assert "gdp" not in AccountantName.__args__  # type: ignore[attr-defined]
    assert validate_accountant("rdp") == "rdp" and validate_accountant("prv") == "prv"


@pytest.mark.parametrize(
    "use",
    [
        lambda: validate_accountant("gdp"),
        lambda: PrivacyLedger(accountant="gdp", delta=1e-5),  # type: ignore[arg-type]
        lambda: DPPlan(
            noise_multiplier=1.0,
            max_grad_norm=1.0,
            sample_rate=0.1,
            steps=10,
            delta=1e-5,
            accountant="gdp",  # type: ignore[arg-type]
        ),
        lambda: epsilon_of([(1.0, 0.1, 10)], delta=1e-5, accountant="gdp"),  # type: ignore[arg-type]
        lambda: calibrate_noise(
            target_epsilon=4.0,
            delta=1e-5,
            sample_rate=0.05,
            steps=200,
            accountant="gdp",  # type: ignore[arg-type]
        ),
        lambda: PrivacyLedger.from_state_dict(
            {**PrivacyLedger(accountant="rdp", delta=1e-5).state_dict(), "accountant": "gdp"}
        ),
    ],
)
def test_gdp_is_refused_saying_why(use: Any) -> None:
    with pytest.raises(ValueError, match=GDP_REFUSED):
        use()


def test_config_refuses_gdp() -> None:
    assert RunConfig.from_flat({"privacy.accountant": "prv"}).privacy.accountant == "prv"
    with pytest.raises(ValueError, match=r"privacy.accountant.*\['rdp', 'prv'\]"):
        RunConfig.from_flat({"privacy.accountant": "gdp"})


@pytest.mark.parametrize(
    ("delta", "n"),
    [(0.5, 259), (1 / 259, 259), (1.0 / 3, 3), (0.01, 100), (0.9, 2), (1e-5, 100_000)],
)
def test_check_delta_refuses_delta_at_or_above_one_over_n(delta: float, n: int) -> None:
    with pytest.raises(ValueError) as info:
        check_delta(delta, n, holder="client 3")
    message = str(info.value)
    assert message.startswith("client 3: ")
    assert f"is not below 1/n = 1/{n}" in message
    assert "allows releasing a record outright" in message


def test_check_delta_message_format() -> None:
    with pytest.raises(ValueError) as info:
        check_delta(0.5, 259, holder="client 3")
    assert str(info.value) == (
        "client 3: delta=0.5 is not below 1/n = 1/259; a delta this large allows releasing a "
        "record outright"
    )


@pytest.mark.parametrize(
    ("delta", "n"), [(1e-5, 1_797), (0.0099, 100), (math.nextafter(0.5, 0), 2)]
)
def test_check_delta_accepts_delta_below_one_over_n(delta: float, n: int) -> None:
    check_delta(delta, n, holder="centralised")


@pytest.mark.parametrize(
    ("delta", "n", "message"),
    [
        (1e-5, 0, "num_records"),
        (1e-5, 2.5, "num_records"),
        (1e-5, True, "num_records"),
        (0.0, 10, "delta"),
        (math.nan, 10, "delta"),
        (-1.0, 10, "delta"),
    ],
)
def test_check_delta_validates_its_arguments(delta: float, n: Any, message: str) -> None:
    with pytest.raises(ValueError, match=rf"^client 0: expected {message}"):
        check_delta(delta, n, holder="client 0")
