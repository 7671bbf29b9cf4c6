"""``PrivacyLedger``: the persistent record of what one data holder spent, with a hard budget."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

from fedprune.privacy.accounting import (
    AccountantName,
    HistoryEntry,
    epsilon_of,
    is_real,
    validate_accountant,
    validate_history,
    validate_history_entry,
)
from fedprune.privacy.plan import DPPlan

__all__ = ["PrivacyBudgetExceededError", "PrivacyLedger"]

_FORMAT_VERSION = 1


class PrivacyBudgetExceededError(RuntimeError):
    """Raised *before* any step when training would take a ledger past its ``max_epsilon``."""


@dataclass
class PrivacyLedger:
    """Composition of every DP-SGD step one data holder (a client, or a centralised run) took.

    The ledger composes over all rounds a client took part in: each :meth:`record` appends
    ``(noise_multiplier, sample_rate, steps)``, merging with the previous entry when the mechanism
    is the same, so that ``epsilon()`` equals one accountant that saw every step. Persist it with
    :class:`~fedprune.privacy.ledger_store.LedgerStore` (authenticated, fail-closed files) so the
    total survives restarts; :meth:`state_dict` / :meth:`to_json` serialise it.

    Attributes
    ----------
    accountant:
        ``"rdp"`` or ``"prv"``; fixed for the ledger's lifetime.
    delta:
        The delta at which epsilon is reported and the budget enforced.
    max_epsilon:
        Hard budget; ``inf`` disables it.
    history:
        Opacus-format ``(noise_multiplier, sample_rate, steps)`` entries, oldest first.
    """

    accountant: AccountantName
    delta: float
    max_epsilon: float = math.inf
    history: list[HistoryEntry] | None = None

    def __post_init__(self) -> None:
        validate_accountant(self.accountant)
        if not (is_real(self.delta) and 0 < self.delta < 1):
            raise ValueError(f"expected delta in (0, 1), got {self.delta!r}")
        if not (is_real(self.max_epsilon) and self.max_epsilon > 0):
            raise ValueError(
                f"expected max_epsilon > 0 (inf for no budget), got {self.max_epsilon!r}"
            )
        self.history = validate_history(self.history or [], accountant=self.accountant)

    @property
    def entries(self) -> list[HistoryEntry]:
        """A copy of the history."""
        return list(self.history or [])

    @property
    def steps(self) -> int:
        """Total number of steps recorded."""
        return sum(steps for _, _, steps in self.entries)

    def epsilon(self) -> float:
        """Epsilon spent so far at the ledger's ``delta`` (0.0 when empty)."""
        return epsilon_of(self.entries, delta=self.delta, accountant=self.accountant)

    def projected_epsilon(self, plan: DPPlan) -> float:
        """Epsilon the ledger would reach after also running ``plan``."""
        self._check_compatible(plan)
        return epsilon_of(
            _merged(self.entries, plan.history_entry), delta=self.delta, accountant=self.accountant
        )

    def ensure_within_budget(self, plan: DPPlan) -> float:
        """Return the projected epsilon after ``plan``, or raise if it would exceed the budget.

        Call this before taking any step: a refused plan leaves the ledger untouched.

        Raises
        ------
        PrivacyBudgetExceededError
            If ``projected_epsilon(plan) > max_epsilon``.
        """
        projected = self.projected_epsilon(plan)
        if projected > self.max_epsilon:
            raise PrivacyBudgetExceededError(
                f"refusing to train: {plan.steps} more steps (sigma={plan.noise_multiplier:.4g}, "
                f"q={plan.sample_rate:.4g}) would raise epsilon from {self.epsilon():.4g} to "
                f"{projected:.4g}, above the budget max_epsilon={self.max_epsilon:.4g} "
                f"(delta={self.delta:g}, accountant={self.accountant})"
            )
        return projected

    def record(self, *, noise_multiplier: float, sample_rate: float, steps: int) -> None:
        """Append ``steps`` steps of the given mechanism (``steps == 0`` records nothing).

        Raises
        ------
        ValueError
            An invalid field (named in the message); the ledger is unchanged.
        """
        entry = validate_history_entry(noise_multiplier, sample_rate, steps)
        if entry[2]:
            self.history = _merged(self.entries, entry)

    def state_dict(self) -> dict[str, Any]:
        """JSON-ready state; :meth:`from_state_dict` restores it exactly."""
        return {
            "version": _FORMAT_VERSION,
            "accountant": self.accountant,
            "delta": self.delta,
            "max_epsilon": self.max_epsilon if math.isfinite(self.max_epsilon) else None,
            "history": [list(e) for e in self.entries],
        }

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> PrivacyLedger:
        """Rebuild a ledger from :meth:`state_dict` output, validating it."""
        version = state.get("version") if isinstance(state, dict) else None
        if type(version) is not int or version != _FORMAT_VERSION:
            raise ValueError(
                f"not a privacy ledger state of version {_FORMAT_VERSION}: {str(state)[:80]!r}"
            )
        missing = [k for k in ("accountant", "delta", "max_epsilon", "history") if k not in state]
        if missing:
            raise ValueError(f"corrupt privacy ledger state: missing fields {missing}")
        history, max_eps = state["history"], state["max_epsilon"]
        if not isinstance(history, list):
            raise ValueError(
                f"corrupt privacy ledger state: expected history to be a list, got {history!r}"
            )
        try:
            return cls(
                accountant=state["accountant"],
                delta=state["delta"],
                max_epsilon=math.inf if max_eps is None else max_eps,
                history=history,
            )
        except ValueError as err:
            raise ValueError(f"corrupt privacy ledger state: {err}") from err

    def to_json(self) -> str:
        """Serialise to a JSON string."""
        return json.dumps(self.state_dict())

    @classmethod
    def from_json(cls, text: str | bytes) -> PrivacyLedger:
        """Inverse of :meth:`to_json`."""
        try:
            state = json.loads(text)
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise ValueError(f"corrupt privacy ledger JSON: {err}") from err
        return cls.from_state_dict(state)

    def _check_compatible(self, plan: DPPlan) -> None:
        if plan.accountant != self.accountant or plan.delta != self.delta:
            raise ValueError(
                f"plan (accountant={plan.accountant}, delta={plan.delta:g}) does not match the "
                f"ledger (accountant={self.accountant}, delta={self.delta:g})"
            )


def _merged(history: list[HistoryEntry], entry: HistoryEntry) -> list[HistoryEntry]:
    """``history + [entry]``, folding ``entry`` into the last one when the mechanism is equal."""
    nm, sr, steps = float(entry[0]), float(entry[1]), int(entry[2])
    if history and history[-1][0] == nm and history[-1][1] == sr:
        return [*history[:-1], (nm, sr, history[-1][2] + steps)]
    return [*history, (nm, sr, steps)]
