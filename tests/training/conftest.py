"""Shared fixtures for the DP-SGD tests: a tiny Conv2d + Linear net (with biases) and its data."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from fedprune.masks import ParameterMask

INPUT_SHAPE = (1, 6, 6)
NUM_CLASSES = 3


def conv_net(seed: int = 0) -> nn.Sequential:
    """Conv2d(1->2, 3x3) -> ReLU -> Linear(32->3): 4-D, 2-D and two 1-D tensors, 119 in total."""
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(1, 2, 3),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(2 * 4 * 4, NUM_CLASSES),
    )


def make_data(n: int = 40, seed: int = 0) -> TensorDataset:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, *INPUT_SHAPE, generator=gen)
    y = torch.randint(0, NUM_CLASSES, (n,), generator=gen)
    return TensorDataset(x, y)


def random_mask(model: nn.Module, density: float, seed: int) -> ParameterMask:
    """Each coordinate of each trainable tensor selected independently with prob. ``density``."""
    gen = torch.Generator().manual_seed(seed)
    return ParameterMask(
        {
            name: torch.rand(p.shape, generator=gen) < density
            for name, p in model.named_parameters()
            if p.requires_grad
        }
    )


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    """Tiny models run faster on one thread, and the 2-core machine is shared."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(name="conv_net", scope="session")
def conv_net_factory() -> Callable[..., nn.Sequential]:
    return conv_net


@pytest.fixture(name="make_data", scope="session")
def make_data_factory() -> Callable[..., TensorDataset]:
    return make_data


@pytest.fixture(name="random_mask", scope="session")
def random_mask_factory() -> Callable[..., ParameterMask]:
    return random_mask
