"""Shared fixtures for the data tests: small synthetic bundles whose records can be identified."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
import torch
from torch.utils.data import TensorDataset

from fedprune.data import DatasetBundle

BundleFactory = Callable[..., DatasetBundle]

# Every image of a synthetic bundle is constant: record i holds the value (i + 1) * _ID_STEP.
_ID_STEP = 1.0 / 4096


def _bundle(
    name: str = "synthetic",
    counts: list[int] | None = None,
    shape: tuple[int, int, int] = (1, 8, 8),
) -> DatasetBundle:
    """Class ``c`` has ``counts[c]`` train records (default ``10 + 2c`` for 10 classes), in an
    order shuffled with a fixed seed; record ``i`` is the constant image ``(i + 1) / 4096``."""
    counts = [10 + 2 * c for c in range(10)] if counts is None else counts
    y = np.repeat(np.arange(len(counts)), counts)
    y = y[np.random.default_rng(1234).permutation(len(y))]
    n = len(y)
    assert n < 4095, "ids must stay below 1 / _ID_STEP"
    x = ((torch.arange(n, dtype=torch.float32) + 1) * _ID_STEP).reshape(n, 1, 1, 1)
    x = x.expand(n, *shape).contiguous()
    return DatasetBundle(
        name=name,
        train=TensorDataset(x, torch.from_numpy(y)),
        test=TensorDataset(x[:5].clone(), torch.from_numpy(y[:5]).clone()),
        num_classes=len(counts),
    )


def _ids(x: torch.Tensor) -> np.ndarray:
    return np.rint(x[:, 0, 0, 0].numpy() / _ID_STEP).astype(np.int64) - 1


@pytest.fixture
def make_bundle() -> BundleFactory:
    """Factory ``make_bundle(name=..., counts=..., shape=...)`` of synthetic bundles."""
    return _bundle


@pytest.fixture
def record_ids() -> Callable[[torch.Tensor], np.ndarray]:
    """Recover the train-record ids of images ``(N, C, H, W)`` taken from a synthetic bundle."""
    return _ids
