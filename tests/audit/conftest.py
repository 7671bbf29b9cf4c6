"""Two tiny digits runs shared by the audit's end-to-end tests: non-private and DP at eps 1."""

from __future__ import annotations

from pathlib import Path

import pytest

from fedprune.config import RunConfig
from fedprune.training.centralised import run_centralised

_TINY = {"mask.strategy": "none", "warmup.epochs": 5}


@pytest.fixture(scope="session")
def nonprivate_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A non-private dense run (SGD with momentum, as the README baseline)."""
    out = tmp_path_factory.mktemp("nonprivate")
    config = RunConfig().replace(
        **_TINY,
        **{
            "privacy.enabled": False,
            "optim.epochs": 20,
            "optim.batch-size": 64,
            "optim.lr": 0.05,
            "optim.momentum": 0.9,
            "out-dir": str(out),
        },
    )
    run_centralised(config)
    return out


@pytest.fixture(scope="session")
def dp_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Dense DP-SGD at epsilon 1, 5 epochs of batches of 128 (~50 steps; in-memory ledger)."""
    out = tmp_path_factory.mktemp("dp")
    config = RunConfig().replace(
        **_TINY,
        **{
            "privacy.target-epsilon": 1.0,
            "optim.epochs": 5,
            "optim.batch-size": 128,
            "optim.lr": 0.2,
            "out-dir": str(out),
        },
    )
    run_centralised(config)
    return out
