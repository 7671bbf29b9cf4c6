"""Thin wrapper over Opacus accountants: epsilon of a history, noise calibration, the delta check.

Only accountants that give an upper bound on epsilon are offered: ``"rdp"`` (Rényi DP) and
``"prv"`` (privacy random variables, with Opacus's error bounds). Opacus's ``"gdp"`` accountant
is refused: it is a central-limit approximation that can under-report epsilon (calibrated to
epsilon 4 at q=0.05, 200 steps, delta=1e-5, it reports 3.99 where PRV gives 4.76 and RDP 5.34;
at q=0.01, 1000 steps PRV gives 5.38).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from numbers import Integral, Real
from typing import Any, Literal, SupportsFloat, cast, get_args

import numpy as np
import opacus
from opacus.accountants import RDPAccountant, create_accountant
from opacus.accountants.analysis import rdp as rdp_analysis
from opacus.accountants.utils import get_noise_multiplier

from fedprune.privacy import calibration_cache

__all__ = [
    "RDP_ORDERS",
    "AccountantName",
    "HistoryEntry",
    "calibrate_noise",
    "check_delta",
    "epsilon_of",
    "is_real",
    "validate_accountant",
    "validate_history",
    "validate_history_entry",
]

AccountantName = Literal["rdp", "prv"]
HistoryEntry = tuple[float, float, int]
"""``(noise_multiplier, sample_rate, steps)``, Opacus's accountant-history format."""

RDP_ORDERS: tuple[float, ...] = (
    *RDPAccountant.DEFAULT_ALPHAS,
    *(64, 80, 96, 128, 160, 192, 256, 320, 384, 512, 640, 768, 1024),
)
"""Rényi orders the ``"rdp"`` accountant minimises over: Opacus's defaults (1.1 to 63) plus
orders up to 1024. The bound at ``delta`` is at least ``log(1/delta) / (max_order - 1)``, so
Opacus's defaults cannot reach epsilon below ~0.19 at ``delta = 1e-5`` (and warn "Optimal order
is the largest alpha" whenever a noise multiplier is large, as in every calibration search);
the larger orders reach ~0.011. Where the optimum lies at or below 63, the value is identical
to Opacus's default accountant; that holds for epsilon above ~0.22 at ``delta = 1e-5`` (above
~0.28 at ``delta = 1e-6``)."""


def _epsilon_kwargs(accountant: AccountantName) -> dict[str, Any]:
    """Extra arguments for ``accountant.get_epsilon`` (the wider orders for RDP)."""
    return {"alphas": list(RDP_ORDERS)} if accountant == "rdp" else {}


_REFUSED_ACCOUNTANTS = {
    "gdp": (
        "the 'gdp' accountant is refused: Gaussian DP accounting is an approximation (a central "
        "limit theorem), not a guarantee, and under-reports epsilon (calibrated to epsilon 4 at "
        "q=0.05, 200 steps, delta=1e-5 it reports 3.99 where PRV gives 4.76); use 'rdp' or 'prv'"
    ),
}


def validate_accountant(name: str) -> AccountantName:
    """Return ``name`` if it is a supported accountant, else raise a ``ValueError`` listing them
    (or saying why a known-unsound one, such as ``"gdp"``, is refused)."""
    if name in _REFUSED_ACCOUNTANTS:
        raise ValueError(_REFUSED_ACCOUNTANTS[name])
    known = get_args(AccountantName)
    if name not in known:
        raise ValueError(f"unknown accountant {name!r}; expected one of {list(known)}")
    return name  # type: ignore[return-value]


def is_real(value: object) -> bool:
    """True for a real number (``int``, ``float``, NumPy scalars...) that is not a ``bool``."""
    return isinstance(value, Real) and not isinstance(value, bool)


def _real(name: str, value: object) -> float:
    if not is_real(value):
        raise ValueError(f"expected {name} to be a real number, got {value!r}")
    return float(cast(SupportsFloat, value))


def validate_history_entry(
    noise_multiplier: object, sample_rate: object, steps: object
) -> HistoryEntry:
    """Check one ``(noise_multiplier, sample_rate, steps)`` entry and return it normalised.

    Raises
    ------
    ValueError
        Naming the bad field: ``noise_multiplier`` must be a finite real ``>= 0``,
        ``sample_rate`` a real in ``(0, 1]`` and ``steps`` an integer ``>= 0`` (not a bool).
    """
    nm = _real("noise_multiplier", noise_multiplier)
    if not (nm >= 0 and math.isfinite(nm)):
        raise ValueError(f"expected noise_multiplier >= 0 and finite, got {noise_multiplier}")
    sr = _real("sample_rate", sample_rate)
    if not 0 < sr <= 1:  # False for NaN too
        raise ValueError(f"expected sample_rate in (0, 1], got {sample_rate}")
    if isinstance(steps, bool) or not isinstance(steps, Integral) or steps < 0:
        raise ValueError(f"expected steps to be an int >= 0, got {steps!r}")
    return (nm, sr, int(steps))


def validate_history(
    history: Sequence[Sequence[object]], *, accountant: AccountantName
) -> list[HistoryEntry]:
    """Validate every entry of ``history`` and that ``accountant`` can compose them.

    Returns
    -------
    list[HistoryEntry]
        The normalised entries, in order.

    Raises
    ------
    ValueError
        An entry that is not ``(noise_multiplier, sample_rate, steps)`` or has an invalid field
        (named in the message), or an unknown or refused accountant.
    """
    validate_accountant(accountant)
    entries: list[HistoryEntry] = []
    for entry in history:
        if not isinstance(entry, Sequence) or isinstance(entry, str) or len(entry) != 3:
            raise ValueError(
                f"expected a (noise_multiplier, sample_rate, steps) entry, got {entry!r}"
            )
        entries.append(validate_history_entry(*entry))
    return entries


def epsilon_of(
    history: Sequence[HistoryEntry], *, delta: float, accountant: AccountantName
) -> float:
    """Epsilon spent by the composition of ``history`` at ``delta`` (0.0 for an empty history).

    Each entry is a run of ``steps`` Poisson-subsampled Gaussian mechanism applications with
    sampling probability ``sample_rate`` and noise multiplier ``noise_multiplier``. A zero
    noise multiplier means no privacy: the result is ``inf``.

    Raises
    ------
    ValueError
        As :func:`validate_history`.
    """
    entries = [e for e in validate_history(history, accountant=accountant) if e[2] > 0]
    if not entries:
        return 0.0
    if any(nm == 0 for nm, _, _ in entries):
        return math.inf
    return _epsilon(tuple(entries), delta, accountant)


@functools.lru_cache(maxsize=256)
def _epsilon(entries: tuple[HistoryEntry, ...], delta: float, accountant: AccountantName) -> float:
    """:func:`epsilon_of` of validated, non-empty entries with positive noise (cached: a client
    asks for the same history's epsilon several times a round)."""
    if accountant == "rdp":
        # What Opacus's RDPAccountant computes (sum over entries of compute_rdp(steps=s), which
        # is the one-step vector times s), from one-step vectors computed once per mechanism.
        rdp = sum([_rdp_of_one_step(nm, sr) * steps for nm, sr, steps in entries])
        eps, _ = rdp_analysis.get_privacy_spent(orders=list(RDP_ORDERS), rdp=rdp, delta=delta)
        return float(eps)
    acc = create_accountant(mechanism=accountant)
    acc.history = list(entries)
    return float(acc.get_epsilon(delta=delta, **_epsilon_kwargs(accountant)))


@functools.lru_cache(maxsize=1024)
def _rdp_of_one_step(noise_multiplier: float, sample_rate: float) -> np.ndarray:
    """Rényi DP at :data:`RDP_ORDERS` of one Poisson-subsampled Gaussian step (read-only).

    The expensive part of RDP accounting (~0.5-1 s on this machine's shared cores for the
    fractional orders) and a pure function of the mechanism, so it is computed once per
    ``(noise_multiplier, sample_rate)`` per process instead of on every epsilon query.
    """
    vec = np.asarray(
        rdp_analysis.compute_rdp(
            q=sample_rate, noise_multiplier=noise_multiplier, steps=1, orders=list(RDP_ORDERS)
        ),
        dtype=float,
    )
    vec.setflags(write=False)
    return vec


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

    Opacus's binary search, remembered on this machine
    (:mod:`fedprune.privacy.calibration_cache`): a remembered value is returned only after one
    accountant evaluation confirms both bounds.

    Raises
    ------
    ValueError
        If an argument is out of range or the target needs a noise multiplier above Opacus's cap.
    """
    if not target_epsilon > 0:
        raise ValueError(f"expected target_epsilon > 0, got {target_epsilon}")
    if not 0 < delta < 1:
        raise ValueError(f"expected delta in (0, 1), got {delta}")
    validate_history_entry(0.0, sample_rate, steps)
    if steps < 1:
        raise ValueError(f"expected steps >= 1, got {steps}")
    validate_accountant(accountant)
    inputs = {
        "accountant": accountant,
        "delta": float(delta),
        "sample_rate": float(sample_rate),
        "steps": int(steps),
        "target_epsilon": float(target_epsilon),
        "tolerance": float(tolerance),
        "opacus": opacus.__version__,
        "orders": RDP_ORDERS[-1] if accountant == "rdp" else None,
    }
    remembered = calibration_cache.lookup(inputs)
    if remembered is not None:
        # One evaluation instead of a search; a value that does not check out is searched anew.
        spent = epsilon_of([(remembered, sample_rate, steps)], delta=delta, accountant=accountant)
        if target_epsilon - tolerance <= spent <= target_epsilon:
            return remembered
    sigma = float(
        get_noise_multiplier(
            target_epsilon=target_epsilon,
            target_delta=delta,
            sample_rate=sample_rate,
            steps=steps,
            accountant=accountant,
            epsilon_tolerance=tolerance,
            **_epsilon_kwargs(accountant),
        )
    )
    calibration_cache.remember(inputs, sigma)
    return sigma


def check_delta(delta: float, num_records: int, *, holder: str) -> None:
    """Refuse a ``delta`` that is not below ``1 / num_records`` for the data ``holder`` holds.

    (epsilon, delta)-DP with ``delta >= 1/n`` is satisfied by a mechanism that publishes one of
    the ``n`` records in the clear (picked at random), so such a delta promises nothing.

    Parameters
    ----------
    delta:
        The delta the holder's epsilon is reported at.
    num_records:
        Number of private records the holder has (``n >= 1``).
    holder:
        Who holds the data (e.g. ``"client 3"``), named in the message.

    Raises
    ------
    ValueError
        ``delta >= 1 / num_records`` (the message names the holder), or ``num_records`` is not
        an int ``>= 1``, or ``delta`` is not in ``(0, 1)``.
    """
    if isinstance(num_records, bool) or not isinstance(num_records, Integral) or num_records < 1:
        raise ValueError(f"{holder}: expected num_records to be an int >= 1, got {num_records!r}")
    if not (is_real(delta) and 0 < delta < 1):
        raise ValueError(f"{holder}: expected delta in (0, 1), got {delta!r}")
    if delta >= 1 / num_records:
        raise ValueError(
            f"{holder}: delta={delta:g} is not below 1/n = 1/{num_records}; a delta this large "
            "allows releasing a record outright"
        )
