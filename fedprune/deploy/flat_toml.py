"""Flat key/value tables as TOML text: Flower's ``--node-config FILE`` and ``--run-config FILE``.

Every key is quoted, so dotted config keys (``data.dataset``) stay one key, as Flower flattens
them; values are TOML scalars (``inf`` and ``nan`` included). Strings are JSON-escaped, which is
valid TOML for basic strings.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path

from fedprune.io import atomic_write

__all__ = ["Scalar", "dump_flat_toml", "write_flat_toml"]

Scalar = bool | int | float | str


def dump_flat_toml(values: Mapping[str, Scalar]) -> str:
    """``values`` as TOML ``"key" = value`` lines.

    Raises
    ------
    TypeError
        A value is not a bool, int, float or str.
    """
    return "".join(f"{json.dumps(key)} = {_value(value, key)}\n" for key, value in values.items())


def write_flat_toml(path: str | Path, values: Mapping[str, Scalar]) -> Path:
    """Write :func:`dump_flat_toml` of ``values`` to ``path`` atomically; return the path."""
    text = dump_flat_toml(values)
    atomic_write(path, lambda f: f.write(text.encode()))
    return Path(path)


def _value(value: Scalar, key: str) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    raise TypeError(f"{key}: cannot write {type(value).__name__} {value!r} as a TOML scalar")
