"""Shared fixtures for the federated tests: a small digits config, its split, mock replies."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from flwr.common import Code, Status
from torch import nn

from fedprune.config import RunConfig
from fedprune.data import PublicPrivateSplit
from fedprune.federated.protocol import (
    METRIC_ACCOUNTANT,
    METRIC_DELTA,
    METRIC_EPSILON,
    METRIC_NOISE_MULTIPLIER,
    METRIC_PARTITION_ID,
    METRIC_REFUSED,
    METRIC_ROUND_STEPS,
    METRIC_SAMPLE_RATE,
    METRIC_STEPS,
)
from fedprune.masks import ParameterMask
from fedprune.pipeline import build_model, load_split, pick_mask
from server.legacy import ClientProxy, FitRes, ndarrays_to_parameters

SMALL = {
    "data.dataset": "digits",
    "federated.num-clients": 3,
    "federated.num-rounds": 2,
    "federated.local-epochs": 1,
    "warmup.epochs": 1,
    "optim.batch-size": 32,
    "privacy.target-epsilon": 4.0,
    "privacy.max-epsilon": 8.0,
    "out-dir": "",
}
"""A small federated config on the bundled digits data (no file output)."""


@pytest.fixture(scope="session")
def small_config() -> RunConfig:
    return RunConfig().replace(**SMALL)


@pytest.fixture(scope="session")
def digits_split(small_config: RunConfig) -> PublicPrivateSplit:
    return load_split(small_config.data, seed=small_config.seed)


@pytest.fixture
def mask(
    small_config: RunConfig, fresh_model: nn.Module, digits_split: PublicPrivateSplit
) -> ParameterMask:
    """The small config's mask for ``fresh_model``, picked from the public split (round 1)."""
    return pick_mask(fresh_model, small_config.mask, digits_split.public, seed=0, round_number=1)


@pytest.fixture
def fresh_model(small_config: RunConfig, digits_split: PublicPrivateSplit) -> nn.Module:
    """The untrained model of ``small_config`` (deterministic from its seed)."""
    return build_model(small_config, digits_split)


class FakeProxy(ClientProxy):
    """A ClientProxy that is never called: the strategy only passes it around."""

    def get_properties(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError

    def get_parameters(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError

    def fit(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError

    def evaluate(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError

    def reconnect(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError


MakeReply = Callable[..., tuple[ClientProxy, FitRes]]


def make_reply(
    vector: np.ndarray,
    *,
    partition_id: int,
    num_examples: int,
    refused: str = "",
    epsilon: float = 1.25,
    steps: int = 14,
) -> tuple[ClientProxy, FitRes]:
    """A legacy fit reply shaped as :class:`clients.client_app.MaskedDPClient` sends it."""
    metrics: dict[str, Any] = {
        METRIC_PARTITION_ID: partition_id,
        METRIC_REFUSED: refused,
        METRIC_EPSILON: epsilon,
        METRIC_STEPS: steps,
        METRIC_ROUND_STEPS: 0 if refused else 7,
        METRIC_NOISE_MULTIPLIER: 0.9,
        METRIC_SAMPLE_RATE: 0.07,
        METRIC_DELTA: 1e-5,
        METRIC_ACCOUNTANT: "rdp",
    }
    res = FitRes(
        status=Status(code=Code.OK, message="Success"),
        parameters=ndarrays_to_parameters([np.asarray(vector, dtype=np.float32)]),
        num_examples=num_examples,
        metrics=metrics,
    )
    return FakeProxy(str(partition_id)), res


@pytest.fixture(name="make_reply", scope="session")
def make_reply_factory() -> MakeReply:
    return make_reply
