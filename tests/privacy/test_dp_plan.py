"""DPPlan: validation naming the bad field, calibration to a target epsilon, serialisation."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from opacus.accountants import RDPAccountant

from fedprune.privacy import DPPlan, calibrate_noise, epsilon_of

GOOD: dict[str, Any] = {
    "noise_multiplier": 1.1,
    "max_grad_norm": 1.0,
    "sample_rate": 0.05,
    "steps": 100,
    "delta": 1e-5,
    "accountant": "rdp",
}


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("noise_multiplier", -0.5),
        ("noise_multiplier", math.nan),
        ("noise_multiplier", math.inf),
        ("noise_multiplier", "1.0"),
        ("max_grad_norm", 0.0),
        ("max_grad_norm", -1.0),
        ("max_grad_norm", math.inf),
        ("max_grad_norm", math.nan),
        ("max_grad_norm", None),
        ("sample_rate", 0.0),
        ("sample_rate", 1.5),
        ("sample_rate", math.nan),
        ("steps", -1),
        ("steps", 2.5),
        ("steps", 3.0),
        ("steps", True),
        ("steps", "3"),
        ("delta", 0.0),
        ("delta", 1.0),
        ("delta", math.nan),
        ("delta", "1e-5"),
        ("accountant", "moments"),
    ],
)
def test_invalid_field_is_named(field: str, value: object) -> None:
    with pytest.raises(ValueError, match=field) as info:
        DPPlan(**{**GOOD, field: value})
    assert repr(value) in str(info.value) or str(value) in str(info.value)


def test_unknown_accountant_lists_the_known_ones() -> None:
    with pytest.raises(ValueError, match=r"expected one of \['rdp', 'prv'\]"):
        DPPlan(**{**GOOD, "accountant": "moments"})


def test_replace_validates() -> None:
    plan = DPPlan(**GOOD)
    assert plan.replace(steps=10).steps == 10
    with pytest.raises(ValueError, match="sample_rate"):
        plan.replace(sample_rate=2.0)


def test_dict_round_trip_through_json() -> None:
    plan = DPPlan(**GOOD)
    assert DPPlan.from_dict(json.loads(json.dumps(plan.to_dict()))) == plan


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({**GOOD, "sigma": 1.0}, r"unknown \['sigma'\]"),
        ({k: v for k, v in GOOD.items() if k != "delta"}, r"missing \['delta'\]"),
        ([1, 2, 3], "expected a dict of DPPlan fields, got list"),
        ({**GOOD, "steps": -3}, "steps"),
    ],
)
def test_from_dict_rejects_bad_input(data: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        DPPlan.from_dict(data)


def test_epsilon_matches_opacus_and_edge_cases() -> None:
    plan = DPPlan(**GOOD)
    reference = RDPAccountant()
    reference.history = [(1.1, 0.05, 100)]
    assert plan.epsilon() == reference.get_epsilon(delta=1e-5)
    assert plan.replace(noise_multiplier=0.0).epsilon() == math.inf
    assert plan.replace(steps=0).epsilon() == 0.0


def test_calibrate_hits_the_target_from_below() -> None:
    plan = DPPlan.calibrate(
        target_epsilon=2.0,
        delta=1e-5,
        sample_rate=0.05,
        steps=200,
        max_grad_norm=0.7,
        accountant="rdp",
    )
    assert 2.0 - 0.01 <= plan.epsilon() <= 2.0
    assert (plan.max_grad_norm, plan.sample_rate, plan.steps, plan.delta) == (0.7, 0.05, 200, 1e-5)
    assert plan.accountant == "rdp"


@pytest.mark.slow
def test_calibrate_hits_the_target_with_prv() -> None:
    plan = DPPlan.calibrate(
        target_epsilon=3.0,
        delta=1e-5,
        sample_rate=0.05,
        steps=100,
        max_grad_norm=1.0,
        accountant="prv",
    )
    assert 3.0 - 0.01 <= plan.epsilon() <= 3.0


def test_calibrate_is_monotone_in_steps_and_target() -> None:
    def sigma(steps: int, target: float = 2.0) -> float:
        return calibrate_noise(
            target_epsilon=target, delta=1e-5, sample_rate=0.05, steps=steps, accountant="rdp"
        )

    by_steps = [sigma(s) for s in (25, 100, 400)]
    assert by_steps == sorted(by_steps) and len(set(by_steps)) == 3
    assert sigma(100, target=4.0) < by_steps[1]


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"target_epsilon": 0.0}, "target_epsilon"),
        ({"target_epsilon": math.nan}, "target_epsilon"),
        ({"delta": 0.0}, "delta"),
        ({"sample_rate": 0.0}, "sample_rate"),
        ({"steps": 0}, "steps"),
        ({"accountant": "nope"}, "accountant"),
        ({"target_epsilon": 1e-6}, "privacy budget is too low"),
    ],
)
def test_calibrate_rejects_bad_arguments(changes: dict[str, Any], message: str) -> None:
    args: dict[str, Any] = {
        "target_epsilon": 2.0,
        "delta": 1e-5,
        "sample_rate": 0.05,
        "steps": 100,
        "accountant": "rdp",
        **changes,
    }
    with pytest.raises(ValueError, match=message):
        calibrate_noise(**args)


def test_epsilon_of_validates_entries() -> None:
    with pytest.raises(ValueError, match="sample_rate"):
        epsilon_of([(1.0, 0.0, 3)], delta=1e-5, accountant="rdp")
    with pytest.raises(ValueError, match=r"expected a \(noise_multiplier, sample_rate, steps\)"):
        epsilon_of([(1.0, 0.1)], delta=1e-5, accountant="rdp")  # type: ignore[list-item]
    assert epsilon_of([], delta=1e-5, accountant="rdp") == 0.0
    assert epsilon_of([(1.0, 0.1, 0)], delta=1e-5, accountant="rdp") == 0.0
