"""Every ``__all__`` name imports, and the core library never imports Flower."""

import importlib
import subprocess
import sys

import pytest

PACKAGES = [
    "fedprune",
    "fedprune.activation",
    "fedprune.audit",
    "fedprune.config",
    "fedprune.data",
    "fedprune.deploy.certs",
    "fedprune.deploy.flat_toml",
    "fedprune.deploy.processes",
    "fedprune.federated",
    "fedprune.federated.protocol",
    "fedprune.flags",
    "fedprune.io",
    "fedprune.masks",
    "fedprune.models",
    "fedprune.pipeline",
    "fedprune.privacy",
    "fedprune.privacy.ledger_store",
    "fedprune.privacy.noise",
    "fedprune.privacy.policy",
    "fedprune.registry",
    "fedprune.seeding",
    "fedprune.summary",
    "fedprune.training",
    "fedprune.training.centralised",
    "fedprune.training.recipe",
]


@pytest.mark.parametrize("name", PACKAGES)
def test_every_public_name_imports(name: str) -> None:
    module = importlib.import_module(name)
    exported = getattr(module, "__all__", [])
    assert exported, f"{name} has an empty __all__"
    for attr in exported:
        assert hasattr(module, attr), f"{name}.{attr} is in __all__ but missing"


def test_core_library_does_not_import_flwr() -> None:
    code = (
        "import sys\n"
        + "".join(f"import {name}\n" for name in PACKAGES)
        + "import fedprune.training.centralised, fedprune.federated.client_round\n"
        + "assert not [m for m in sys.modules if m == 'flwr' or m.startswith('flwr.')]\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
