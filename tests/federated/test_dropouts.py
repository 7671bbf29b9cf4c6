"""Clients that vanish mid-round, without Ray.

Server side (``MaskedDPFedAvg`` on a ``FederatedServer``, hooks driven by hand): the round
completes with the survivors, or -- when no aggregate arrives (SecAgg+ could not reconstruct)
-- is skipped with one log line; the global model is never corrupted. Client side
(``run_client_round``): a client whose reply is lost, or that dies part-way through training,
keeps every step it took in its ledger.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from flwr.server.client_manager import SimpleClientManager
from torch import nn

from fedprune.config import RunConfig
from fedprune.data import PublicPrivateSplit
from fedprune.federated import FederatedServer, load_checkpoint, model_to_arrays, run_client_round
from fedprune.federated.client_round import client_partition, ledger_holder
from fedprune.federated.protocol import METRIC_REFUSED, METRIC_STEPS
from fedprune.masks import ParameterMask
from fedprune.pipeline import build_model
from fedprune.privacy.ledger_store import LedgerStore
from fedprune.privacy.policy import PrivacyPolicy
from fedprune.training.fast_masked import FastMaskedDPSGD
from fedprune.training.masked_optimizer import MaskedDPOptimizer
from fedprune.training.recipe import steps_for
from server.strategy import MaskedDPFedAvg

NUM_CLIENTS = 3


@pytest.fixture
def strategy(
    small_config: RunConfig, digits_split: PublicPrivateSplit, tmp_path: Path
) -> MaskedDPFedAvg:
    config = small_config.replace(**{"out-dir": str(tmp_path / "run"), "federated.num-rounds": 3})
    server = FederatedServer(
        config=config,
        split=digits_split,
        model=build_model(config, digits_split),
        secure=True,
        public_only_accuracy=0.5,
        progress=False,
    )
    return MaskedDPFedAvg(server)


@pytest.fixture
def manager(make_reply: Any) -> SimpleClientManager:
    m = SimpleClientManager()
    for pid in range(NUM_CLIENTS):
        m.register(make_reply(np.zeros(1), partition_id=pid, num_examples=1)[0])
    return m


def _state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _unchanged(model: nn.Module, before: dict[str, torch.Tensor]) -> bool:
    return all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_a_round_completes_with_the_survivors(
    strategy: MaskedDPFedAvg, manager: SimpleClientManager, make_reply: Any
) -> None:
    params = strategy.initialize_parameters(manager)
    assert params is not None
    strategy.configure_fit(1, params, manager)
    mask = strategy.server.mask
    assert mask is not None
    before = _state(strategy.server.model)
    # two of three clients vanished after the share exchange; SecAgg+ reconstructed their
    # masks and hands the survivor's average to the strategy, with the dropouts as failures
    average = np.random.default_rng(0).normal(size=mask.num_selected).astype(np.float32) * 0.01
    survivors = [make_reply(average, partition_id=0, num_examples=400)]
    dropped: list[Any] = [RuntimeError("node 2 timed out"), RuntimeError("node 3 timed out")]

    strategy.aggregate_fit(1, survivors, dropped)
    strategy.evaluate(1, params)

    moved = mask.gather(dict(strategy.server.model.named_parameters())) - mask.gather(before)
    np.testing.assert_allclose(moved.numpy(), average, atol=1e-7)
    row = strategy.server.summary.rounds[-1]
    assert (row.clients_trained, row.failures, row.skipped) == (1, 2, "")
    assert set(strategy.server.summary.holders) == {"0"}  # a vanished client claims nothing


def test_a_round_secagg_cannot_reconstruct_is_skipped_with_one_log_line(
    strategy: MaskedDPFedAvg,
    manager: SimpleClientManager,
    make_reply: Any,
    caplog: pytest.LogCaptureFixture,
    tmp_path: Path,
) -> None:
    params = strategy.initialize_parameters(manager)
    assert params is not None
    strategy.configure_fit(1, params, manager)
    mask = strategy.server.mask
    assert mask is not None
    update = np.full(mask.num_selected, 0.01, dtype=np.float32)
    strategy.aggregate_fit(1, [make_reply(update, partition_id=0, num_examples=10)], [])
    strategy.evaluate(1, params)
    after_one = _state(strategy.server.model)

    # round 2: too few clients survived, SecAgg+ halted, so no aggregate reached the strategy
    strategy.configure_fit(2, params, manager)
    caplog.clear()  # only what evaluating the halted round logs
    with caplog.at_level(logging.INFO, logger="fedprune"):
        strategy.evaluate(2, params)

    assert _unchanged(strategy.server.model, after_one)
    lines = [r.getMessage() for r in caplog.records if r.name.startswith("fedprune")]
    assert lines == [
        "round 2: secure aggregation halted (too few clients left to reconstruct the sum); "
        "round skipped, model unchanged"
    ]
    rows = strategy.server.summary.rounds
    assert [(r.round, r.skipped) for r in rows] == [(1, ""), (2, "secure aggregation halted")]
    assert rows[1].test_loss == rows[0].test_loss  # the very same model was evaluated
    checkpoint = load_checkpoint(tmp_path / "run")
    assert checkpoint is not None and checkpoint.round == 2
    assert all(torch.equal(checkpoint.model[k], v) for k, v in after_one.items())

    # round 3 goes on as usual
    strategy.configure_fit(3, params, manager)
    strategy.aggregate_fit(3, [make_reply(update, partition_id=1, num_examples=10)], [])
    strategy.evaluate(3, params)
    assert strategy.server.summary.rounds[-1].clients_trained == 1
    assert not _unchanged(strategy.server.model, after_one)


def test_a_round_every_client_vanished_from_leaves_the_model_alone(
    strategy: MaskedDPFedAvg, manager: SimpleClientManager
) -> None:
    params = strategy.initialize_parameters(manager)
    assert params is not None
    strategy.configure_fit(1, params, manager)
    before = _state(strategy.server.model)
    strategy.aggregate_fit(1, [], [RuntimeError("gone")] * NUM_CLIENTS)
    strategy.evaluate(1, params)
    assert _unchanged(strategy.server.model, before)
    row = strategy.server.summary.rounds[-1]
    assert (row.clients_trained, row.failures, row.skipped) == (0, 3, "no client trained")
    assert strategy.server.summary.idle_reason() == (
        "no client trained in round 1: 3 failed or dropped replies"
    )


# -- the client's side: steps taken are never forgotten ---------------------------------------


def _round_steps(config: RunConfig, partition_id: int = 0) -> int:
    n = len(
        client_partition(
            config.data,
            seed=config.seed,
            partition_id=partition_id,
            num_partitions=config.federated.num_clients,
        )
    )
    return steps_for(
        num_examples=n, batch_size=config.optim.batch_size, epochs=config.federated.local_epochs
    )[1]


def _client_round(
    config: RunConfig, model: nn.Module, mask: ParameterMask, store: LedgerStore, server_round: int
) -> Any:
    return run_client_round(
        config,
        partition_id=0,
        num_partitions=config.federated.num_clients,
        global_arrays=model_to_arrays(model),
        mask=mask,
        server_round=server_round,
        policy=PrivacyPolicy(),
        store=store,
    )


def _stored_steps(store: LedgerStore, config: RunConfig) -> int:
    return (
        LedgerStore(store.directory)
        .open(
            ledger_holder(config, 0),
            accountant=config.privacy.accountant,
            delta=config.privacy.delta,
        )
        .steps
    )


def test_a_client_whose_reply_was_lost_still_counts_its_steps(
    small_config: RunConfig, fresh_model: nn.Module, mask: ParameterMask, tmp_path: Path
) -> None:
    store = LedgerStore(tmp_path / "ledgers")
    per_round = _round_steps(small_config)
    _client_round(small_config, fresh_model, mask, store, 1)  # trained; the reply never arrived
    assert _stored_steps(store, small_config) == per_round
    # its next round composes with the lost one
    second = _client_round(small_config, fresh_model, mask, store, 2)
    assert second.metrics[METRIC_REFUSED] == ""
    assert second.metrics[METRIC_STEPS] == 2 * per_round == _stored_steps(store, small_config)


def test_a_client_that_dies_mid_training_keeps_the_steps_it_took(
    small_config: RunConfig,
    fresh_model: nn.Module,
    mask: ParameterMask,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    store = LedgerStore(tmp_path / "ledgers")
    per_round = _round_steps(small_config)
    survive = 3
    assert per_round > survive
    taken: list[int] = []

    def dies_after_survivors(real_step: Callable[..., Any]) -> Callable[..., Any]:
        def step_then_die(self: Any, *args: Any, **kwargs: Any) -> Any:
            if len(taken) == survive:
                raise RuntimeError("the node lost power")
            taken.append(1)
            return real_step(self, *args, **kwargs)

        return step_then_die

    # whichever engine train_dp_sgd picks (the fast one or the Opacus reference) dies
    for engine in (MaskedDPOptimizer, FastMaskedDPSGD):
        monkeypatch.setattr(engine, "step", dies_after_survivors(engine.step))
    with pytest.raises(RuntimeError, match="lost power"):
        _client_round(small_config, fresh_model, mask, store, 1)

    assert _stored_steps(store, small_config) == survive
