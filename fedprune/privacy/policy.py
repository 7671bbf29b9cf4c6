"""``PrivacyPolicy``: a data holder's own privacy rules, which a server may tighten, never weaken.

Each client (a SuperNode, or a simulated node) owns its policy: it comes from the node's own
configuration (``flower-supernode --node-config "max-epsilon=2 ..."``, or the launcher of a
simulation, which owns its simulated nodes), never from a message or a run config the server
chose. :meth:`PrivacyPolicy.resolve` turns the run's requested :class:`PrivacyConfig` into the
one the client will actually apply, or refuses it with :class:`PolicyRefusalError`:

* DP cannot be switched off (unless the node itself sets ``allow-non-private = true``);
* accountant and delta are the node's (its ledger accounts at them); a request for others is
  refused rather than silently re-interpreted;
* the budget is the tighter of the node's ``max-epsilon`` and the request's;
* a round whose calibrated noise multiplier falls below the node's ``min-noise-multiplier`` is
  refused (:meth:`check_noise`);
* where the ledger lives and whether noise is reproducible are node settings only.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fedprune.config import PrivacyConfig
from fedprune.io import fedprune_home
from fedprune.privacy.accounting import AccountantName, validate_accountant

__all__ = ["POLICY_KEYS", "PolicyRefusalError", "PrivacyPolicy", "default_ledger_dir"]

POLICY_KEYS = (
    "allow-non-private",
    "accountant",
    "delta",
    "max-epsilon",
    "min-noise-multiplier",
    "ledger-dir",
    "reproducible-noise",
)
"""Node-config keys a policy reads (kebab-case, as Flower's ``--node-config``)."""


class PolicyRefusalError(RuntimeError):
    """The run asked for something weaker than the holder's policy allows; nothing was done."""


def default_ledger_dir() -> Path:
    """Where ledgers live when a policy names no ``ledger-dir``: ``$FEDPRUNE_HOME/ledgers``
    (``FEDPRUNE_HOME`` defaults to ``~/.fedprune``). Persistent across runs, per machine."""
    return fedprune_home() / "ledgers"


@dataclass(frozen=True)
class PrivacyPolicy:
    """One data holder's privacy rules (the safe default is what every simulated node gets).

    Attributes
    ----------
    allow_non_private:
        Whether the holder agrees to train *without* DP when a run asks for it.
    accountant, delta:
        How the holder's ledger accounts (fixed for the ledger's lifetime).
    max_epsilon:
        The holder's hard budget over every run that shares its ledger.
    min_noise_multiplier:
        Floor on sigma: a round with less noise is refused even within the budget.
    ledger_dir:
        The holder's ledger directory (empty: :func:`default_ledger_dir`).
    reproducible_noise:
        Research/debug opt-in: noise from a seed derived from the run seed. Anyone who knows
        the run config can then remove the noise, so it voids the guarantee against the server.
    """

    allow_non_private: bool = False
    accountant: AccountantName = "rdp"
    delta: float = 1e-5
    max_epsilon: float = 10.0
    min_noise_multiplier: float = 0.5
    ledger_dir: str = ""
    reproducible_noise: bool = False

    def __post_init__(self) -> None:
        validate_accountant(self.accountant)
        if not 0 < self.delta < 1:
            raise ValueError(f"policy delta: expected a value in (0, 1), got {self.delta!r}")
        if not self.max_epsilon > 0:
            raise ValueError(f"policy max-epsilon: expected > 0, got {self.max_epsilon!r}")
        if not (self.min_noise_multiplier >= 0 and math.isfinite(self.min_noise_multiplier)):
            raise ValueError(
                f"policy min-noise-multiplier: expected a finite value >= 0, "
                f"got {self.min_noise_multiplier!r}"
            )

    @classmethod
    def from_node_config(cls, node_config: Mapping[str, Any]) -> PrivacyPolicy:
        """The policy of a node's config: :data:`POLICY_KEYS` over the safe defaults (other
        keys, e.g. ``partition-id``, are ignored). Values may be strings, as on the command line.

        Raises
        ------
        ValueError
            A value of the wrong type or out of range (the key is named).
        """
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            key = f.name.replace("_", "-")
            if key not in node_config:
                continue
            raw = node_config[key]
            try:
                values[f.name] = _parse(raw, type(getattr(cls(), f.name)))
            except ValueError:
                raise ValueError(f"node config {key}: cannot use {raw!r}") from None
        return cls(**values)

    def to_node_config(self) -> dict[str, bool | float | str]:
        """The policy as node-config keys (inverse of :meth:`from_node_config`)."""
        return {f.name.replace("_", "-"): getattr(self, f.name) for f in dataclasses.fields(self)}

    @property
    def ledger_path(self) -> Path:
        """The ledger directory in use."""
        return Path(self.ledger_dir) if self.ledger_dir else default_ledger_dir()

    def resolve(self, requested: PrivacyConfig) -> PrivacyConfig:
        """The privacy settings the holder applies for a run that asked for ``requested``.

        Raises
        ------
        PolicyRefusalError
            ``requested`` is weaker than the policy allows (the message says what and how the
            node operator could allow it).
        """
        if not requested.enabled:
            if not self.allow_non_private:
                raise PolicyRefusalError(
                    "the run asks for training without DP (privacy.enabled=false); this node's "
                    "policy requires DP (the node may set allow-non-private=true)"
                )
            return requested
        if requested.accountant != self.accountant:
            raise PolicyRefusalError(
                f"the run asks for accountant {requested.accountant!r}; this node accounts with "
                f"{self.accountant!r} (node config accountant)"
            )
        if requested.delta != self.delta:
            raise PolicyRefusalError(
                f"the run asks for delta={requested.delta:g}; this node's ledger accounts at "
                f"delta={self.delta:g} (node config delta)"
            )
        return dataclasses.replace(
            requested, max_epsilon=min(requested.max_epsilon, self.max_epsilon)
        )

    def check_noise(self, noise_multiplier: float) -> None:
        """Refuse a round whose noise multiplier is below the policy's floor.

        Raises
        ------
        PolicyRefusalError
            ``noise_multiplier < min_noise_multiplier``.
        """
        if noise_multiplier < self.min_noise_multiplier:
            raise PolicyRefusalError(
                f"the run's noise multiplier {noise_multiplier:.4g} is below this node's floor "
                f"min-noise-multiplier={self.min_noise_multiplier:g}"
            )


def _parse(raw: Any, kind: type) -> Any:
    """``raw`` as ``kind`` (bool, float or str), accepting the strings a command line gives."""
    if kind is bool:
        if isinstance(raw, bool):
            return raw
        if isinstance(raw, str) and raw.lower() in {"true", "false"}:
            return raw.lower() == "true"
        raise ValueError(raw)
    if kind is float:
        if isinstance(raw, bool):
            raise ValueError(raw)
        return float(raw)
    return str(raw)
