"""How an aggregated update moves the global model (selected coordinates only)."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from fedprune.masks import ParameterMask

__all__ = ["apply_update"]


@torch.no_grad()
def apply_update(
    model: nn.Module, mask: ParameterMask, update: np.ndarray, *, server_lr: float
) -> nn.Module:
    """Add ``server_lr * update`` to the selected coordinates of ``model`` (in place).

    ``update`` is the aggregated (mean) client update over the selected coordinates, in
    :meth:`ParameterMask.gather` order, shape ``(mask.num_selected,)``. Unselected coordinates
    are not written at all, so they stay bit-identical.
    """
    flat = torch.as_tensor(np.asarray(update, dtype=np.float32)).reshape(-1)
    if flat.numel() != mask.num_selected:
        raise ValueError(
            f"update has {flat.numel()} values, expected {mask.num_selected} (one per selected "
            "coordinate)"
        )
    if not bool(torch.isfinite(flat).all()):
        raise ValueError("update contains NaN or inf values; refusing to apply it")
    params = dict(model.named_parameters())
    delta = mask.scatter(flat * server_lr, {name: params[name] for name in mask.names})
    for name, d in delta.items():
        sel = mask[name]
        params[name][sel] += d[sel]
    return model
