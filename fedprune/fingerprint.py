"""The one "same run?" check: a config's identity, its fingerprint, the keys two configs differ in.

A run is identified by its resolved flat config (:meth:`fedprune.config.RunConfig.to_flat`, or
the ``config`` a ``summary.json`` recorded) reduced to its *identity*: the keys that exist in
today's :class:`~fedprune.config.RunConfig` and whose value differs from today's default, with
non-finite floats mapped to ``None`` (as ``summary.json`` stores them), minus the keys the
caller says may differ (``ignore``, e.g. ``out-dir``). Consequences, for every caller alike
(``fedprune compare``'s resume, a federated checkpoint's resume):

* a config key fedprune adds later, at a default that keeps the old behaviour, does not change
  the identity of a finished run (the old record lacks it, the new one has the default);
* a key fedprune removes is not compared (it no longer means anything);
* a changed *default* changes the identity of a run that relied on the old default.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Collection, Mapping
from typing import Any

from fedprune.config import RunConfig
from fedprune.io import to_jsonable

__all__ = ["config_changes", "config_fingerprint", "config_identity"]


def config_identity(flat: Mapping[str, Any], *, ignore: Collection[str] = ()) -> dict[str, Any]:
    """The keys of ``flat`` that make up a run's identity (see the module docstring).

    Parameters
    ----------
    flat:
        Flat kebab-case config (complete or partial: missing keys mean "the default").
    ignore:
        Keys that never count (e.g. ``"out-dir"``).
    """
    defaults = to_jsonable(RunConfig().to_flat())
    return {
        k: v
        for k, v in sorted(to_jsonable(dict(flat)).items())
        if k in defaults and k not in ignore and v != defaults[k]
    }


def config_fingerprint(flat: Mapping[str, Any], *, ignore: Collection[str] = ()) -> str:
    """A short stable hash (12 hex digits) of :func:`config_identity`."""
    text = json.dumps(config_identity(flat, ignore=ignore), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def config_changes(
    a: Mapping[str, Any], b: Mapping[str, Any], *, ignore: Collection[str] = ()
) -> list[str]:
    """Sorted keys whose identity values differ between ``a`` and ``b`` (empty: same run)."""
    ia, ib = config_identity(a, ignore=ignore), config_identity(b, ignore=ignore)
    return sorted(k for k in ia.keys() | ib.keys() if ia.get(k) != ib.get(k))
