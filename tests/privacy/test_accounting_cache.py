"""Epsilon queries reuse the expensive per-mechanism RDP work and still equal Opacus exactly.

A client asks for its ledger's epsilon several times a round (budget check, after training,
the reply's metrics) over a history that only grows; each query used to recompute the Rényi
divergence at every order from scratch (~1 s each on this machine).
"""

from __future__ import annotations

import warnings

import pytest
from opacus.accountants import PRVAccountant, RDPAccountant
from opacus.accountants.analysis import rdp as rdp_analysis

from fedprune.privacy import PrivacyLedger, accounting, epsilon_of
from fedprune.privacy.accounting import RDP_ORDERS

DELTA = 1e-5
HISTORY = [(1.1, 32 / 129, 9), (1.1, 32 / 130, 18), (0.9, 0.05, 40), (1.1, 32 / 129, 5)]


def _opacus(history: list[tuple[float, float, int]], accountant: str) -> float:
    acc = RDPAccountant() if accountant == "rdp" else PRVAccountant()
    acc.history = list(history)
    kwargs = {"alphas": list(RDP_ORDERS)} if accountant == "rdp" else {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(acc.get_epsilon(delta=DELTA, **kwargs))


@pytest.mark.parametrize("accountant", ["rdp", "prv"])
@pytest.mark.parametrize("length", [1, 2, 4])
def test_equal_to_opacus_bit_for_bit(accountant: str, length: int) -> None:
    history = HISTORY[:length]
    assert epsilon_of(history, delta=DELTA, accountant=accountant) == _opacus(history, accountant)  # type: ignore[arg-type]


def test_one_rdp_computation_per_mechanism(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[float, float]] = []
    real = rdp_analysis.compute_rdp

    def counting(*, q: float, noise_multiplier: float, steps: int, orders: object) -> object:
        calls.append((noise_multiplier, q))
        return real(q=q, noise_multiplier=noise_multiplier, steps=steps, orders=orders)

    monkeypatch.setattr(rdp_analysis, "compute_rdp", counting)
    accounting._rdp_of_one_step.cache_clear()
    accounting._epsilon.cache_clear()
    ledger = PrivacyLedger(accountant="rdp", delta=DELTA)
    seen = []
    for _ in range(5):  # five rounds of one client: 9 steps each, three queries a round
        ledger.record(noise_multiplier=1.3, sample_rate=0.25, steps=9)
        seen += [ledger.epsilon(), ledger.epsilon()]
    assert calls == [(1.3, 0.25)]
    assert seen == sorted(seen) and seen[0] < seen[-1]  # grows with the steps: nothing stale
    assert seen[-1] == _opacus([(1.3, 0.25, 45)], "rdp")


def test_cached_vector_cannot_be_modified() -> None:
    vec = accounting._rdp_of_one_step(1.0, 0.1)
    with pytest.raises(ValueError):
        vec *= 2
