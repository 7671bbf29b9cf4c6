"""The ClientApp's client without Ray: message unpacking and the persistence of its ledger."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from flwr.app import Context, RecordDict
from torch import nn

from clients.client_app import MaskedDPClient
from fedprune.config import RunConfig
from fedprune.data import PublicPrivateSplit
from fedprune.federated import METRIC_EPSILON, METRIC_REFUSED, METRIC_STEPS, model_to_arrays
from fedprune.federated.protocol import CONFIG_MASK, CONFIG_ROUND, CONFIG_RUN
from fedprune.masks import ParameterMask
from fedprune.pipeline import pick_mask
from fedprune.privacy import PrivacyLedger


def _context(partition_id: int = 0) -> Context:
    return Context(
        run_id=1,
        node_id=100 + partition_id,
        node_config={"partition-id": partition_id, "num-partitions": 3},
        state=RecordDict(),
        run_config={},
    )


def _fit_config(config: RunConfig, mask: ParameterMask, server_round: int) -> dict[str, Any]:
    """What ``MaskedDPFedAvg.configure_fit`` sends."""
    return {
        CONFIG_ROUND: server_round,
        CONFIG_MASK: mask.to_bytes(),
        CONFIG_RUN: json.dumps(config.to_flat()),
    }


@pytest.fixture
def mask(
    small_config: RunConfig, fresh_model: nn.Module, digits_split: PublicPrivateSplit
) -> ParameterMask:
    return pick_mask(fresh_model, small_config.mask, digits_split.public, seed=1)


def test_fit_replies_with_the_masked_update_and_keeps_the_ledger_in_node_state(
    small_config: RunConfig, fresh_model: nn.Module, mask: ParameterMask
) -> None:
    context = _context(partition_id=2)
    arrays = model_to_arrays(fresh_model)
    steps = []
    for server_round in (1, 2):
        # Flower builds a new client object for every message; only context.state survives
        client = MaskedDPClient(context)
        vectors, num_examples, metrics = client.fit(
            arrays, _fit_config(small_config, mask, server_round)
        )
        assert len(vectors) == 1
        assert vectors[0].shape == (mask.num_selected,)
        assert num_examples > 0
        assert metrics[METRIC_REFUSED] == ""
        steps.append(metrics[METRIC_STEPS])
        stored = PrivacyLedger.from_json(
            bytes(context.state.config_records["privacy-ledger"]["json"])  # type: ignore[arg-type]
        )
        assert stored.steps == metrics[METRIC_STEPS]
        assert stored.epsilon() == metrics[METRIC_EPSILON]

    assert steps[1] == 2 * steps[0] > 0


def test_ledger_dir_keeps_the_spend_across_fresh_node_state(
    small_config: RunConfig, fresh_model: nn.Module, mask: ParameterMask, tmp_path: Path
) -> None:
    config = small_config.replace(**{"privacy.ledger-dir": str(tmp_path / "ledgers")})
    arrays = model_to_arrays(fresh_model)

    _, _, first = MaskedDPClient(_context()).fit(arrays, _fit_config(config, mask, 1))
    # a restarted node: empty context.state, but the ledger file is still there
    _, _, second = MaskedDPClient(_context()).fit(arrays, _fit_config(config, mask, 2))

    ledger = PrivacyLedger.load(tmp_path / "ledgers" / "client-0.json")
    assert second[METRIC_STEPS] == 2 * first[METRIC_STEPS] == ledger.steps
    assert second[METRIC_EPSILON] == ledger.epsilon()


def test_refusal_reaches_the_reply(
    small_config: RunConfig, fresh_model: nn.Module, mask: ParameterMask
) -> None:
    config = small_config.replace(**{"privacy.max-epsilon": 0.1})
    context = _context()
    vectors, num_examples, metrics = MaskedDPClient(context).fit(
        model_to_arrays(fresh_model), _fit_config(config, mask, 1)
    )
    assert num_examples == 0
    assert not np.any(vectors[0])
    assert "max_epsilon" in str(metrics[METRIC_REFUSED])
    assert metrics[METRIC_STEPS] == 0
