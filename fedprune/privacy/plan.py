"""``DPPlan``: one frozen, self-validating object tying the DP-SGD mechanism to its accounting."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from fedprune.privacy.accounting import (
    AccountantName,
    calibrate_noise,
    epsilon_of,
    is_real,
    validate_accountant,
    validate_history_entry,
)

__all__ = ["DPPlan"]


@dataclass(frozen=True)
class DPPlan:
    """The DP-SGD mechanism of one training run and what it costs.

    Attributes
    ----------
    noise_multiplier:
        sigma; each step adds N(0, (sigma * max_grad_norm)^2) to every *selected* coordinate of
        the summed clipped gradients. ``0`` means no noise and no privacy (epsilon is ``inf``).
    max_grad_norm:
        C; each example's gradient restricted to the selected coordinates is clipped to L2 norm C.
    sample_rate:
        q; Poisson sampling probability of each record per step (``batch_size / n``).
    steps:
        Number of optimizer steps the plan covers.
    delta:
        Target delta (typically < 1/n).
    accountant:
        ``"rdp"`` or ``"prv"`` (Opacus accountants; ``"gdp"`` is refused as approximate).
    """

    noise_multiplier: float
    max_grad_norm: float
    sample_rate: float
    steps: int
    delta: float
    accountant: AccountantName = "rdp"

    def __post_init__(self) -> None:
        validate_history_entry(self.noise_multiplier, self.sample_rate, self.steps)
        if not (is_real(self.max_grad_norm) and 0 < self.max_grad_norm < math.inf):
            raise ValueError(f"expected max_grad_norm > 0 and finite, got {self.max_grad_norm!r}")
        if not (is_real(self.delta) and 0 < self.delta < 1):
            raise ValueError(f"expected delta in (0, 1), got {self.delta!r}")
        validate_accountant(self.accountant)

    @classmethod
    def calibrate(
        cls,
        *,
        target_epsilon: float,
        delta: float,
        sample_rate: float,
        steps: int,
        max_grad_norm: float,
        accountant: AccountantName = "rdp",
    ) -> DPPlan:
        """The plan with the smallest noise multiplier whose ``steps`` steps spend at most
        ``target_epsilon`` (Opacus's binary search, tolerance 0.01 in epsilon)."""
        sigma = calibrate_noise(
            target_epsilon=target_epsilon,
            delta=delta,
            sample_rate=sample_rate,
            steps=steps,
            accountant=accountant,
        )
        return cls(
            noise_multiplier=sigma,
            max_grad_norm=max_grad_norm,
            sample_rate=sample_rate,
            steps=steps,
            delta=delta,
            accountant=accountant,
        )

    @property
    def history_entry(self) -> tuple[float, float, int]:
        """``(noise_multiplier, sample_rate, steps)`` in Opacus's history format."""
        return (self.noise_multiplier, self.sample_rate, self.steps)

    def epsilon(self) -> float:
        """Epsilon at ``delta`` after all ``steps`` steps of this plan alone."""
        return epsilon_of([self.history_entry], delta=self.delta, accountant=self.accountant)

    def replace(self, **changes: Any) -> DPPlan:
        """A validated copy with ``changes`` applied (e.g. ``plan.replace(steps=10)``)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict of the fields (see :meth:`from_dict`)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DPPlan:
        """Inverse of :meth:`to_dict`; validates every field.

        Raises
        ------
        ValueError
            ``data`` is not a dict, lacks a required field, has an unknown one, or a field is
            invalid (the message names it).
        """
        if not isinstance(data, dict):
            raise ValueError(f"expected a dict of DPPlan fields, got {type(data).__name__}")
        fields = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - set(fields))
        missing = [
            name
            for name, f in fields.items()
            if name not in data and f.default is dataclasses.MISSING
        ]
        if unknown or missing:
            raise ValueError(f"bad DPPlan fields: unknown {unknown}, missing {missing}")
        return cls(**data)
