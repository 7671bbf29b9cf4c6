"""Thin wrapper over Opacus accountants: epsilon of a history and noise calibration."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal, get_args

from opacus.accountants import create_accountant
from opacus.accountants.utils import get_noise_multiplier

__all__ = ["AccountantName", "HistoryEntry", "calibrate_noise", "epsilon_of", "validate_accountant"]

AccountantName = Literal["rdp", "prv", "gdp"]
HistoryEntry = tuple[float, float, int]
"""``(noise_multiplier, sample_rate, steps)``, Opacus's accountant-history format."""


def validate_accountant(name: str) -> AccountantName:
    """Return ``name`` if it is a supported accountant, else raise a ``ValueError`` listing them."""
    known = get_args(AccountantName)
    if name not in known:
        raise ValueError(f"unknown accountant {name!r}; expected one of {list(known)}")
    return name  # type: ignore[return-value]


def epsilon_of(
    history: Sequence[HistoryEntry], *, delta: float, accountant: AccountantName
) -> float:
    """Epsilon spent by the composition of ``history`` at ``delta`` (0.0 for an empty history).

    Each entry is a run of ``steps`` Poisson-subsampled Gaussian mechanism applications with
    sampling probability ``sample_rate`` and noise multiplier ``noise_multiplier``. A zero
    noise multiplier means no privacy: the result is ``inf``.
    """
    validate_accountant(accountant)
    entries = [e for e in history if e[2] > 0]
    if not entries:
        return 0.0
    if any(nm <= 0 for nm, _, _ in entries):
        return math.inf
    acc = create_accountant(mechanism=accountant)
    acc.history = [(float(nm), float(sr), int(steps)) for nm, sr, steps in entries]
    return float(acc.get_epsilon(delta=delta))


def calibrate_noise(
    *,
    target_epsilon: float,
    delta: float,
    sample_rate: float,
    steps: int,
    accountant: AccountantName,
    tolerance: float = 0.01,
) -> float:
    """Noise multiplier such that ``steps`` steps at ``sample_rate`` spend at most
    ``target_epsilon`` at ``delta`` (and at least ``target_epsilon - tolerance``).

    Raises
    ------
    ValueError
        If an argument is out of range or the target needs a noise multiplier above Opacus's cap.
    """
    if target_epsilon <= 0:
        raise ValueError(f"expected target_epsilon > 0, got {target_epsilon}")
    if steps < 1:
        raise ValueError(f"expected steps >= 1, got {steps}")
    validate_accountant(accountant)
    return float(
        get_noise_multiplier(
            target_epsilon=target_epsilon,
            target_delta=delta,
            sample_rate=sample_rate,
            steps=steps,
            accountant=accountant,
            epsilon_tolerance=tolerance,
        )
    )
