"""``fedprune run``: the Flower app in the Simulation Engine (Ray), in-process.

Defaults come from ``[tool.flwr.app.config]`` in the app's ``pyproject.toml`` (the same values
``flwr run .`` uses); command-line overrides go on top. Ray is started as a fresh local
instance (never joining a cluster that happens to run here) and shut down at the end.
"""

from __future__ import annotations

import logging
import os
import tomllib
import warnings
from pathlib import Path
from typing import Any

from fedprune.config import RunConfig

__all__ = ["app_defaults", "run_federated"]

logger = logging.getLogger(__name__)

APP_DIR = Path(__file__).resolve().parent.parent


def app_defaults(app_dir: Path = APP_DIR) -> dict[str, Any]:
    """The flat ``[tool.flwr.app.config]`` table of the app's ``pyproject.toml``."""
    path = app_dir / "pyproject.toml"
    if not path.exists():
        raise FileNotFoundError(
            f"the Flower app's pyproject.toml is not at {path}: run fedprune from a source "
            "checkout (pip install -e .)"
        )
    with path.open("rb") as f:
        return dict(tomllib.load(f)["tool"]["flwr"]["app"]["config"])


def run_federated(overrides: dict[str, Any], *, progress: bool = True) -> dict[str, Any]:
    """Run the federated app in simulation with one Ray actor (1 CPU) per concurrent client.

    Returns the summary the server wrote to ``<out-dir>/summary.json``.
    """
    config = RunConfig.from_flat({**app_defaults(), **overrides})
    # Resolve now: the server writes relative to the launcher's working directory.
    config = config.replace(**{"out-dir": str(Path(config.out_dir).resolve())})

    os.environ["RAY_ADDRESS"] = "local"  # a fresh local Ray, never a running cluster
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning, module="flwr")
        from flwr.simulation import run_simulation

    from clients.client_app import app as client_app
    from server.server_app import make_server_app

    sink: list[dict[str, Any]] = []
    run_simulation(
        server_app=make_server_app(config, sink=sink, progress=progress),
        client_app=client_app,
        num_supernodes=config.federated.num_clients,
        backend_config={
            "client_resources": {"num_cpus": 1, "num_gpus": 0.0},
            "init_args": {"address": "local", "include_dashboard": False, "num_cpus": 2},
        },
    )
    if not sink:
        raise RuntimeError(
            "the federated run did not finish (see the log above); partial results, if any, are "
            f"in {config.out_dir}"
        )
    return sink[0]
