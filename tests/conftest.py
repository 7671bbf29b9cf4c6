"""Suite-wide isolation: no test reads or writes the user's real ledgers under ``~/.fedprune``
or the user's feature cache."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def _isolated_fedprune_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Each test gets its own ``FEDPRUNE_HOME`` (default ledger directory), inherited by any
    subprocess or Ray worker it starts."""
    home = tmp_path / "fedprune-home"
    monkeypatch.setenv("FEDPRUNE_HOME", str(home))
    monkeypatch.setenv("FEDPRUNE_CACHE_DIR", str(tmp_path / "fedprune-cache"))
    return home
