"""Every name in ``fedprune.masks.__all__`` imports, and no mask module imports flwr."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import fedprune.masks


def test_all_names_import() -> None:
    for name in fedprune.masks.__all__:
        assert getattr(fedprune.masks, name) is not None
    for module in ("mask", "strategies", "select"):
        sub = importlib.import_module(f"fedprune.masks.{module}")
        assert set(sub.__all__) <= set(fedprune.masks.__all__)


def test_masks_do_not_import_flwr() -> None:
    for path in Path(fedprune.masks.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                modules = [node.module or ""]
            else:
                continue
            assert not any(m.split(".")[0] == "flwr" for m in modules), path.name
