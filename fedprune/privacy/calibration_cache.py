"""Noise calibrations remembered on the holder's machine, so a fresh process need not search.

A deployed SuperNode starts a fresh ClientApp process for every training message, so the
in-process cache of :func:`fedprune.training.recipe.round_plan` never hits there, and calibrating
a noise multiplier is a binary search of ~14 accountant evaluations. This cache keeps the result
in ``$FEDPRUNE_HOME/cache/noise-calibrations.json``.

Privacy: the file holds only the calibration's inputs (accountant, delta, sample rate, steps,
target epsilon, tolerance, Opacus version) and the noise multiplier found -- the same values a
client reports to the server in its metrics. A remembered value is used only after one accountant
evaluation confirms it (see :func:`fedprune.privacy.accounting.calibrate_noise`), so a stale or
edited file can never weaken privacy; at worst the search runs again. Reading or writing the file
never fails a round: any problem means a cache miss.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from fedprune.io import fedprune_home, read_json, write_json

__all__ = ["cache_path", "lookup", "remember"]

logger = logging.getLogger(__name__)


def cache_path() -> Path:
    """``$FEDPRUNE_HOME/cache/noise-calibrations.json``."""
    return fedprune_home() / "cache" / "noise-calibrations.json"


def _key(inputs: dict[str, Any]) -> str:
    return json.dumps(inputs, sort_keys=True)


def _entries() -> dict[str, Any]:
    try:
        entries = read_json(cache_path())
    except (OSError, ValueError):
        return {}
    return entries if isinstance(entries, dict) else {}


def lookup(inputs: dict[str, Any]) -> float | None:
    """The noise multiplier remembered for ``inputs`` (JSON scalars), or ``None``."""
    value = _entries().get(_key(inputs))
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        return None
    return float(value)


def remember(inputs: dict[str, Any], noise_multiplier: float) -> None:
    """Add ``inputs -> noise_multiplier`` to the file (atomic write; a failure is only logged)."""
    entries = _entries()
    entries[_key(inputs)] = noise_multiplier
    try:
        write_json(cache_path(), entries)
    except OSError as err:
        logger.debug("noise calibration not cached (%s)", err)
