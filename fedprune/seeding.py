"""One rule for deriving every seed of a run from ``config.seed``.

Seeds drive data splits, model initialisation, warm starts, mask re-draws and (only in the
explicit reproducible-noise research mode) DP noise. Every caller derives its seed with
:func:`derive_seed` and a label naming its use, so two uses never share a stream by accident
and centralised runs and federated clients derive identical seeds for identical work.
"""

from __future__ import annotations

import hashlib

__all__ = ["derive_seed"]


def derive_seed(base: int, *labels: str | int) -> int:
    """A 63-bit seed determined by ``base`` and ``labels`` (e.g. ``("noise", holder, round)``).

    Uses SHA-256 of the labels, so nearby bases or labels give unrelated seeds. Not a secret:
    anyone who knows ``base`` can recompute it (DP noise must never depend on it by default).
    """
    text = "/".join(str(part) for part in (base, *labels))
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big") >> 1
