"""The server's step: when a mask is due, and how an aggregated update moves the model."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from fedprune.config import MaskConfig
from fedprune.federated import apply_update
from fedprune.masks import ParameterMask
from fedprune.training.recipe import mask_due


def _model() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(5, 4), nn.ReLU(), nn.Linear(4, 2))


def _mask(model: nn.Module, seed: int = 1, density: float = 0.4) -> ParameterMask:
    gen = torch.Generator().manual_seed(seed)
    return ParameterMask(
        {n: torch.rand(p.shape, generator=gen) < density for n, p in model.named_parameters()}
    )


@pytest.mark.parametrize(
    ("mode", "every", "due_rounds"),
    [
        ("freeze", 1, [1]),
        ("freeze", 3, [1]),
        ("select", 1, [1, 2, 3, 4, 5, 6, 7]),
        ("select", 3, [1, 4, 7]),
    ],
)
def test_mask_due(mode: str, every: int, due_rounds: list[int]) -> None:
    config = MaskConfig(mode=mode, select_every=every)  # type: ignore[arg-type]
    assert [r for r in range(1, 8) if mask_due(config, r)] == due_rounds


def test_mask_due_rejects_round_zero() -> None:
    with pytest.raises(ValueError, match="expected server_round >= 1, got 0"):
        mask_due(MaskConfig(), 0)


def test_apply_update_moves_only_selected_coordinates() -> None:
    model = _model()
    mask = _mask(model)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    update = np.random.default_rng(0).normal(size=mask.num_selected).astype(np.float32)

    apply_update(model, mask, update, server_lr=0.5)

    params = dict(model.named_parameters())
    moved = mask.gather(params) - mask.gather(before)
    torch.testing.assert_close(moved, torch.from_numpy(update) * 0.5, rtol=0, atol=1e-6)
    for name, sel in mask.items():
        assert torch.equal(params[name].detach()[~sel], before[name][~sel]), name


@pytest.mark.parametrize("size_change", [-1, 1])
def test_apply_update_rejects_wrong_length(size_change: int) -> None:
    model = _model()
    mask = _mask(model)
    before = [p.detach().clone() for p in model.parameters()]
    with pytest.raises(ValueError, match=f"expected {mask.num_selected}"):
        apply_update(
            model, mask, np.zeros(mask.num_selected + size_change, np.float32), server_lr=1.0
        )
    assert all(torch.equal(p, b) for p, b in zip(model.parameters(), before, strict=True))


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_apply_update_rejects_non_finite_values(bad: float) -> None:
    model = _model()
    mask = _mask(model)
    before = [p.detach().clone() for p in model.parameters()]
    update = np.zeros(mask.num_selected, np.float32)
    update[3] = bad
    with pytest.raises(ValueError, match="NaN or inf"):
        apply_update(model, mask, update, server_lr=1.0)
    assert all(torch.equal(p, b) for p, b in zip(model.parameters(), before, strict=True))
