"""Writing run results: JSON that stays valid JSON (non-finite floats become ``null``)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

__all__ = ["write_json"]


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Write ``data`` as indented JSON (``inf`` -> ``null``), creating parent directories."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(_finite(data), indent=2, sort_keys=False) + "\n")


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value
