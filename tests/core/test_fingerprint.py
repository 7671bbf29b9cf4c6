"""The one "same run?" check: identity ignores defaults and unknown keys, sees changed defaults."""

from __future__ import annotations

import pytest

import fedprune.fingerprint as fingerprint
from fedprune.config import RunConfig
from fedprune.fingerprint import config_changes, config_fingerprint, config_identity


def test_identity_keeps_only_non_default_known_keys() -> None:
    flat = RunConfig().replace(**{"mask.density": 0.05, "out-dir": "x"}).to_flat()
    assert config_identity(flat, ignore={"out-dir"}) == {"mask.density": 0.05}
    # A record from an older fedprune with a key since removed, and missing a key since added.
    old = {k: v for k, v in flat.items() if k != "secagg.max-weight"} | {"gone.key": 1}
    assert config_fingerprint(old, ignore={"out-dir"}) == config_fingerprint(
        flat, ignore={"out-dir"}
    )
    assert config_changes(old, flat, ignore={"out-dir"}) == []


def test_changes_name_every_differing_key() -> None:
    a = RunConfig().to_flat()
    b = RunConfig().replace(**{"optim.lr": 0.1, "privacy.max-epsilon": "inf", "seed": 3})
    assert config_changes(a, b.to_flat()) == ["optim.lr", "seed"]  # max-epsilon inf is default
    assert config_fingerprint(a) != config_fingerprint(b.to_flat())


def test_a_changed_default_changes_the_identity_of_a_recorded_run(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    recorded = RunConfig().to_flat()  # complete, as summary.json stores it (lr 0.5)
    planned = {"seed": 0}  # a partial plan relying on the default
    assert config_changes(recorded, planned) == []
    new_default = RunConfig().replace(**{"optim.lr": 0.2})
    monkeypatch.setattr(fingerprint, "RunConfig", lambda: new_default)
    assert config_changes(recorded, planned) == ["optim.lr"]
