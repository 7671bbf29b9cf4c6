"""Layering: the core never imports the Flower apps (or Flower); the two apps never import each
other. Checked on the source (every import statement), so a lazy import inside a function counts."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _imported_top_levels(package: str) -> dict[str, set[str]]:
    """``{file: {top-level module names it imports}}`` for every file of ``package``."""
    found: dict[str, set[str]] = {}
    for path in sorted((ROOT / package).rglob("*.py")):
        names: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.add(node.module.split(".")[0])
        found[str(path.relative_to(ROOT))] = names
    return found


@pytest.mark.parametrize(
    ("package", "forbidden"),
    [
        ("fedprune", {"server", "clients", "flwr", "experiments"}),
        ("clients", {"server", "experiments"}),
        ("server", {"clients", "experiments"}),
    ],
)
def test_no_upward_or_sideways_imports(package: str, forbidden: set[str]) -> None:
    offenders = {
        f: sorted(names & forbidden)
        for f, names in _imported_top_levels(package).items()
        if names & forbidden
    }
    assert not offenders, offenders


def test_flower_legacy_api_is_imported_in_one_module_per_app() -> None:
    legacy = ("flwr.client", "flwr.server", "flwr.common")
    for package in ("clients", "server"):
        users = []
        for path in (ROOT / package).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                module = node.module if isinstance(node, ast.ImportFrom) else None
                if module and any(module == m or module.startswith(m + ".") for m in legacy):
                    users.append(path.name)
        assert set(users) <= {"legacy.py"}, (package, users)
