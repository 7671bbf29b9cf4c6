"""The ClientApp's client without Ray: message unpacking, its policy and its persistent ledger."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from flwr.app import Context, RecordDict
from torch import nn

from clients.client_app import MaskedDPClient
from fedprune.config import RunConfig
from fedprune.federated import model_to_arrays
from fedprune.federated.client_round import ledger_holder
from fedprune.federated.protocol import (
    CONFIG_MASK,
    CONFIG_ROUND,
    METRIC_EPSILON,
    METRIC_NOISE,
    METRIC_REFUSED,
    METRIC_ROUND_STEPS,
    METRIC_STEPS,
)
from fedprune.masks import ParameterMask
from fedprune.privacy import PrivacyLedger
from fedprune.privacy.ledger_store import LedgerStore
from fedprune.privacy.policy import default_ledger_dir


def _context(config: RunConfig, partition_id: int = 0, **node: Any) -> Context:
    """A fresh node context, as Flower gives it: the run's config and the node's own config."""
    return Context(
        run_id=1,
        node_id=100 + partition_id,
        node_config={"partition-id": partition_id, "num-partitions": 3, **node},
        state=RecordDict(),
        run_config=config.to_flat(),
    )


def _fit_config(mask: ParameterMask, server_round: int) -> dict[str, Any]:
    """What ``MaskedDPFedAvg.configure_fit`` sends (no run config: that is in the context)."""
    return {CONFIG_ROUND: server_round, CONFIG_MASK: mask.to_bytes()}


def _stored(directory: Path, config: RunConfig, partition_id: int) -> PrivacyLedger:
    return LedgerStore(directory).open(
        ledger_holder(config, partition_id),
        accountant=config.privacy.accountant,
        delta=config.privacy.delta,
    )


def test_fit_replies_with_the_masked_update_and_keeps_the_ledger_in_the_default_dir(
    small_config: RunConfig, fresh_model: nn.Module, mask: ParameterMask
) -> None:
    context = _context(small_config, partition_id=2)
    arrays = model_to_arrays(fresh_model)
    steps = []
    for server_round in (1, 2):
        # Flower builds a new client object for every message
        client = MaskedDPClient(context)
        vectors, num_examples, metrics = client.fit(arrays, _fit_config(mask, server_round))
        assert len(vectors) == 1
        assert vectors[0].shape == (mask.num_selected,)
        assert num_examples > 0
        assert metrics[METRIC_REFUSED] == ""
        assert metrics[METRIC_NOISE] == "secure"  # the node's default policy
        steps.append(metrics[METRIC_STEPS])
        # the node's default ledger directory ($FEDPRUNE_HOME/ledgers), not the run's state
        stored = _stored(default_ledger_dir(), small_config, 2)
        assert stored.steps == metrics[METRIC_STEPS]
        assert stored.epsilon() == metrics[METRIC_EPSILON]

    assert steps[1] == 2 * steps[0] > 0
    assert len(context.state.config_records) == 0


def test_policy_ledger_dir_keeps_the_spend_across_fresh_node_state(
    small_config: RunConfig, fresh_model: nn.Module, mask: ParameterMask, tmp_path: Path
) -> None:
    ledgers = tmp_path / "ledgers"
    arrays = model_to_arrays(fresh_model)

    client = MaskedDPClient(_context(small_config, **{"ledger-dir": str(ledgers)}))
    _, _, first = client.fit(arrays, _fit_config(mask, 1))
    # a restarted node: a fresh context and process state, but the ledger files are still there
    client = MaskedDPClient(_context(small_config, **{"ledger-dir": str(ledgers)}))
    _, _, second = client.fit(arrays, _fit_config(mask, 2))

    ledger = _stored(ledgers, small_config, 0)
    assert second[METRIC_STEPS] == 2 * first[METRIC_STEPS] == ledger.steps
    assert second[METRIC_EPSILON] == ledger.epsilon()
    assert not default_ledger_dir().exists()  # the policy's directory, not the default one


def test_refusal_reaches_the_reply(
    small_config: RunConfig, fresh_model: nn.Module, mask: ParameterMask
) -> None:
    config = small_config.replace(**{"privacy.max-epsilon": 0.1})
    vectors, num_examples, metrics = MaskedDPClient(_context(config)).fit(
        model_to_arrays(fresh_model), _fit_config(mask, 1)
    )
    assert num_examples == 0
    assert not np.any(vectors[0])
    assert "max_epsilon=0.1" in str(metrics[METRIC_REFUSED])
    assert metrics[METRIC_STEPS] == 0


def test_the_nodes_own_config_sets_its_policy(
    small_config: RunConfig, fresh_model: nn.Module, mask: ParameterMask
) -> None:
    # the run allows 8; the node's operator allows only 0.1 (strings, as from --node-config)
    context = _context(small_config, **{"max-epsilon": "0.1"})
    vectors, num_examples, metrics = MaskedDPClient(context).fit(
        model_to_arrays(fresh_model), _fit_config(mask, 1)
    )
    assert num_examples == 0
    assert not np.any(vectors[0])
    assert "max_epsilon=0.1" in str(metrics[METRIC_REFUSED])
    # and reproducible noise is the node's opt-in too
    context = _context(small_config, partition_id=1, **{"reproducible-noise": "true"})
    _, num_examples, metrics = MaskedDPClient(context).fit(
        model_to_arrays(fresh_model), _fit_config(mask, 1)
    )
    assert num_examples > 0 and metrics[METRIC_NOISE] == "reproducible"


def test_launcher_settings_reach_the_client_without_touching_the_context(
    small_config: RunConfig, fresh_model: nn.Module, mask: ParameterMask, tmp_path: Path
) -> None:
    # Flower's run_simulation leaves context.run_config empty and refuses a context whose
    # run_config a mod modified (the reply is then lost): the launcher's settings go to the
    # client directly, under the node's own config.
    context = Context(
        run_id=1,
        node_id=100,
        node_config={"partition-id": 0, "num-partitions": 3, "max-epsilon": 0.1},
        state=RecordDict(),
        run_config={},
    )
    client = MaskedDPClient(
        context,
        run_config=small_config.to_flat(),
        node_config={"max-epsilon": 5.0, "ledger-dir": str(tmp_path / "launcher")},
    )
    assert client.config == small_config
    assert client.policy.max_epsilon == 0.1  # the node's own setting wins
    assert client.policy.ledger_dir == str(tmp_path / "launcher")
    _, num_examples, metrics = client.fit(model_to_arrays(fresh_model), _fit_config(mask, 1))
    assert num_examples == 0 and "max_epsilon=0.1" in str(metrics[METRIC_REFUSED])
    assert dict(context.run_config) == {}
    assert set(context.node_config) == {"partition-id", "num-partitions", "max-epsilon"}


# -- a bad mask from the server is refused, not raised -------------------------------------------


def _corruptions(mask: ParameterMask) -> dict[str, object]:
    good = mask.to_bytes()
    flipped = bytearray(good)
    flipped[len(good) // 2] ^= 0x10
    return {
        "flipped bit": bytes(flipped),
        "truncated": good[: len(good) - 3],
        "empty": b"",
        "not bytes": "a mask",
        "missing": None,
    }


@pytest.mark.parametrize("case", ["flipped bit", "truncated", "empty", "not bytes", "missing"])
def test_an_unreadable_mask_is_refused_with_the_reason(
    small_config: RunConfig, fresh_model: nn.Module, mask: ParameterMask, case: str
) -> None:
    fit_config = _fit_config(mask, 1)
    value = _corruptions(mask)[case]
    if value is None:
        del fit_config[CONFIG_MASK]
    else:
        fit_config[CONFIG_MASK] = value

    vectors, num_examples, metrics = MaskedDPClient(_context(small_config)).fit(
        model_to_arrays(fresh_model), fit_config
    )

    assert num_examples == 0
    assert len(vectors) == 1 and vectors[0].size == 0  # the mask's size is unknown
    reason = str(metrics[METRIC_REFUSED])
    assert reason.startswith("unreadable mask from the server: ")
    expected = {
        "flipped bit": "checksum mismatch",
        "truncated": "truncated",
        "empty": "truncated",
        "not bytes": "expected the mask as bytes, got str",
        "missing": "expected the mask as bytes, got NoneType",
    }[case]
    assert expected in reason
    assert metrics[METRIC_ROUND_STEPS] == 0
    assert not default_ledger_dir().exists()  # no ledger was even opened: nothing was spent


def test_a_mask_for_another_model_is_refused_naming_the_tensor(
    small_config: RunConfig, fresh_model: nn.Module, mask: ParameterMask
) -> None:
    other = ParameterMask({**{n: mask[n] for n in mask}, "extra.weight": torch.ones(2, 2) > 0})
    vectors, num_examples, metrics = MaskedDPClient(_context(small_config)).fit(
        model_to_arrays(fresh_model), _fit_config(other, 1)
    )
    assert num_examples == 0
    assert vectors[0].shape == (other.num_selected,) and not vectors[0].any()
    reason = str(metrics[METRIC_REFUSED])
    assert "the server's mask does not fit the model" in reason and "extra.weight" in reason
    assert not default_ledger_dir().exists()


def test_the_client_app_module_loads_without_torch() -> None:
    # A SuperNode starts a fresh ClientApp process per message; SecAgg+'s key-exchange and
    # unmasking messages never train, so loading the app must not pay for torch and Opacus.
    code = (
        "import sys, clients.client_app\n"
        "heavy = sorted(m for m in ('torch', 'opacus', 'sklearn') if m in sys.modules)\n"
        "assert not heavy, heavy\n"
    )
    root = Path(__file__).resolve().parents[2]
    subprocess.run([sys.executable, "-c", code], check=True, cwd=root)
