"""Shared fixtures for the mask tests: a tiny conv net and a public dataset for it."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from fedprune.data.splits import PublicDataset

INPUT_SHAPE = (1, 6, 6)
NUM_CLASSES = 3


def tiny_model(seed: int = 0) -> nn.Sequential:
    """Conv (with bias) -> GroupNorm -> linear: 4-D, 2-D and 1-D parameters, 323 in total."""
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3),
        nn.GroupNorm(2, 4),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(4 * 4 * 4, NUM_CLASSES),
    )


def make_public(n: int = 40, seed: int = 0) -> PublicDataset:
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(n, *INPUT_SHAPE, generator=gen)
    y = torch.randint(0, NUM_CLASSES, (n,), generator=gen)
    return PublicDataset(TensorDataset(x, y), kind="in-distribution", description="test data")


@pytest.fixture
def model() -> nn.Sequential:
    return tiny_model()


@pytest.fixture(name="tiny_model", scope="session")
def tiny_model_factory() -> Callable[..., nn.Sequential]:
    """The :func:`tiny_model` factory, for tests that need several seeds."""
    return tiny_model


@pytest.fixture(scope="session")
def public() -> PublicDataset:
    return make_public()
