"""PrivacyLedger: composition across rounds and restarts equals one Opacus accountant; the budget;
persistence and rejection of corrupt state."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from opacus.accountants import PRVAccountant, RDPAccountant
from opacus.accountants.accountant import IAccountant

from fedprune.privacy import DPPlan, PrivacyBudgetExceededError, PrivacyLedger
from fedprune.privacy.accounting import HistoryEntry
from fedprune.privacy.ledger_store import LedgerStore

DELTA = 1e-5
ROUNDS: list[HistoryEntry] = [(1.0, 0.1, 30), (1.0, 0.1, 20), (1.5, 0.05, 40), (1.0, 0.1, 10)]


def _stepped(accountant: IAccountant, rounds: list[HistoryEntry]) -> IAccountant:
    """``accountant`` after every step of ``rounds``, one ``step()`` call per step."""
    for sigma, q, steps in rounds:
        for _ in range(steps):
            accountant.step(noise_multiplier=sigma, sample_rate=q)
    return accountant


def _restarted(ledger: PrivacyLedger, how: int, tmp_path: Path) -> PrivacyLedger:
    if how == 0:
        return PrivacyLedger.from_json(ledger.to_json())
    # restart through the node's persistent, authenticated store
    store = LedgerStore(tmp_path / "state")
    store.open("holder", accountant=ledger.accountant, delta=ledger.delta)
    store.save("holder", ledger)
    return LedgerStore(tmp_path / "state").open(
        "holder", accountant=ledger.accountant, delta=ledger.delta
    )


@pytest.mark.parametrize(("name", "reference"), [("rdp", RDPAccountant), ("prv", PRVAccountant)])
def test_rounds_with_restarts_equal_one_accountant(
    name: str, reference: type[IAccountant], tmp_path: Path
) -> None:
    ledger = PrivacyLedger(accountant=name, delta=DELTA)  # type: ignore[arg-type]
    for i, (sigma, q, steps) in enumerate(ROUNDS):
        ledger.record(noise_multiplier=sigma, sample_rate=q, steps=steps)
        ledger = _restarted(ledger, i % 2, tmp_path)
    accountant = _stepped(reference(), ROUNDS)
    assert ledger.entries == accountant.history  # equal mechanisms merged as Opacus merges them
    assert ledger.steps == 100
    assert ledger.epsilon() == accountant.get_epsilon(delta=DELTA)


mechanisms = st.tuples(
    st.sampled_from([0.6, 1.0, 2.5]), st.sampled_from([0.01, 0.1, 0.5]), st.integers(1, 200)
)


@settings(max_examples=8, deadline=None)
@given(rounds=st.lists(mechanisms, min_size=1, max_size=3))
def test_epsilon_never_decreases_as_steps_are_added(rounds: list[HistoryEntry]) -> None:
    ledger = PrivacyLedger(accountant="rdp", delta=DELTA)
    previous = ledger.epsilon()
    assert previous == 0.0
    for sigma, q, steps in rounds:
        ledger.record(noise_multiplier=sigma, sample_rate=q, steps=steps)
        current = ledger.epsilon()
        assert current >= previous
        previous = current


def test_budget_is_enforced_before_recording() -> None:
    ledger = PrivacyLedger(accountant="rdp", delta=DELTA, max_epsilon=8.0)
    plan = DPPlan(noise_multiplier=1.0, max_grad_norm=1.0, sample_rate=0.1, steps=40, delta=DELTA)
    projected = ledger.ensure_within_budget(plan)
    assert ledger.steps == 0
    ledger.record(noise_multiplier=1.0, sample_rate=0.1, steps=40)
    assert ledger.epsilon() == projected
    state = ledger.state_dict()
    big = plan.replace(steps=400)
    assert ledger.projected_epsilon(big) > 8.0
    with pytest.raises(PrivacyBudgetExceededError, match=r"above the budget max_epsilon=8\b"):
        ledger.ensure_within_budget(big)
    assert ledger.state_dict() == state
    with pytest.raises(PrivacyBudgetExceededError):
        ledger.ensure_within_budget(plan.replace(noise_multiplier=0.0))  # no noise: inf


def test_plan_must_match_accountant_and_delta() -> None:
    ledger = PrivacyLedger(accountant="rdp", delta=DELTA)
    plan = DPPlan(noise_multiplier=1.0, max_grad_norm=1.0, sample_rate=0.1, steps=4, delta=1e-6)
    with pytest.raises(ValueError, match="does not match the ledger"):
        ledger.ensure_within_budget(plan)


def test_record_validates_and_leaves_the_ledger_alone_on_error() -> None:
    ledger = PrivacyLedger(accountant="rdp", delta=DELTA, history=[(1.0, 0.1, 5)])
    ledger.record(noise_multiplier=2.0, sample_rate=0.1, steps=0)
    assert ledger.entries == [(1.0, 0.1, 5)]
    for bad, field in [
        ({"steps": -1}, "steps"),
        ({"steps": 1.5}, "steps"),
        ({"noise_multiplier": math.nan}, "noise_multiplier"),
        ({"noise_multiplier": -1.0}, "noise_multiplier"),
        ({"sample_rate": 0.0}, "sample_rate"),
    ]:
        args: dict[str, Any] = {"noise_multiplier": 1.0, "sample_rate": 0.1, "steps": 1, **bad}
        with pytest.raises(ValueError, match=field):
            ledger.record(**args)
    assert ledger.entries == [(1.0, 0.1, 5)]


def test_unbounded_budget_round_trips_as_null() -> None:
    ledger = PrivacyLedger(accountant="prv", delta=DELTA)
    assert json.loads(ledger.to_json())["max_epsilon"] is None
    again = PrivacyLedger.from_json(ledger.to_json())
    assert again == ledger and again.max_epsilon == math.inf


def _state(**changes: Any) -> dict[str, Any]:
    state = PrivacyLedger(
        accountant="rdp", delta=DELTA, max_epsilon=8.0, history=[(1.0, 0.1, 5)]
    ).state_dict()
    return {**state, **changes}


@pytest.mark.parametrize(
    ("state", "message"),
    [
        ([], "not a privacy ledger state of version 1"),
        (_state(version=2), "not a privacy ledger state of version 1"),
        (_state(version=True), "not a privacy ledger state of version 1"),
        ({k: v for k, v in _state().items() if k != "history"}, r"missing fields \['history'\]"),
        (_state(history="abc"), "expected history to be a list"),
        (_state(history=[[1.0, 0.1]]), r"\(noise_multiplier, sample_rate, steps\) entry"),
        (_state(history=[[1.0, 0.1, -5]]), "steps"),
        (_state(history=[[1.0, 0.1, 2.5]]), "steps"),
        (_state(history=[["1.0", 0.1, 5]]), "noise_multiplier"),
        (_state(history=[[-1.0, 0.1, 5]]), "noise_multiplier"),
        (_state(history=[[1.0, 1.5, 5]]), "sample_rate"),
        (_state(history=[[1.0, None, 5]]), "sample_rate"),
        (_state(accountant="moments"), "unknown accountant"),
        (_state(delta="1e-5"), "delta"),
        (_state(delta=0.0), "delta"),
        (_state(max_epsilon=-1.0), "max_epsilon"),
        (_state(max_epsilon="big"), "max_epsilon"),
    ],
)
def test_from_state_dict_rejects_corrupt_state(state: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        PrivacyLedger.from_state_dict(state)
    if isinstance(state, dict):
        with pytest.raises(ValueError, match=message):
            PrivacyLedger.from_json(json.dumps(state))


@pytest.mark.parametrize(
    "text", ["", "{", "not json", b"\xff\xfe\x00garbage", "[1, 2]", "null", '{"version": 1}']
)
def test_from_json_rejects_garbage(text: str | bytes) -> None:
    with pytest.raises(ValueError, match="privacy ledger"):
        PrivacyLedger.from_json(text)


def test_from_json_rejects_truncated_json() -> None:
    text = PrivacyLedger(accountant="rdp", delta=DELTA, history=[(1.0, 0.1, 5)]).to_json()
    with pytest.raises(ValueError, match="corrupt privacy ledger JSON"):
        PrivacyLedger.from_json(text[:-7])


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"accountant": "nope"}, "unknown accountant"),
        ({"delta": 1.0}, "delta"),
        ({"max_epsilon": 0.0}, "max_epsilon"),
        ({"max_epsilon": math.nan}, "max_epsilon"),
    ],
)
def test_constructor_validates(changes: dict[str, Any], message: str) -> None:
    args: dict[str, Any] = {"accountant": "rdp", "delta": DELTA, **changes}
    with pytest.raises(ValueError, match=message):
        PrivacyLedger(**args)
