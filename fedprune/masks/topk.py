"""The one top-k: how many entries a fraction keeps, and which (masks and activation study)."""

from __future__ import annotations

import math

import torch

__all__ = ["keep_count", "top_k"]


def keep_count(num_entries: int, fraction: float) -> int:
    """Entries a ``fraction`` in ``(0, 1]`` keeps out of ``num_entries >= 1``: at least 1.

    ``floor(fraction * num_entries + 0.5)``: halves round *up* (10 entries at 0.25 keep 3), not to
    even as Python's ``round`` does, so the count never depends on the parity of its integer part.
    """
    if not 0.0 < fraction <= 1.0:  # False for NaN too
        raise ValueError(f"expected a fraction in (0, 1], got {fraction}")
    if num_entries < 1:
        raise ValueError(f"expected at least one entry, got {num_entries}")
    return max(1, math.floor(fraction * num_entries + 0.5))


def top_k(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Boolean mask, shaped like ``scores``, of its ``k`` largest entries (ties: lower index)."""
    flat = scores.reshape(-1)
    keep = torch.zeros(flat.numel(), dtype=torch.bool, device=scores.device)
    order = torch.sort(flat, descending=True, stable=True).indices
    keep[order[:k]] = True
    return keep.reshape(scores.shape)
