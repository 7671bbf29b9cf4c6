"""``run_client_round``: one client's masked DP-SGD round, its ledger and its data partition."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch
from opacus.accountants import RDPAccountant
from torch import nn

from fedprune.config import RunConfig
from fedprune.data import PublicPrivateSplit
from fedprune.federated import ClientRoundResult, model_to_arrays, run_client_round
from fedprune.federated.client_round import client_partition, ledger_holder
from fedprune.federated.protocol import (
    METRIC_ACCOUNTANT,
    METRIC_DELTA,
    METRIC_EPSILON,
    METRIC_FIT_S,
    METRIC_NOISE,
    METRIC_NOISE_MULTIPLIER,
    METRIC_PARTITION_ID,
    METRIC_REFUSED,
    METRIC_ROUND_STEPS,
    METRIC_SAMPLE_RATE,
    METRIC_STEPS,
    METRIC_TRAIN_S,
)
from fedprune.masks import ParameterMask
from fedprune.privacy import PrivacyLedger
from fedprune.privacy.ledger_store import LedgerStore
from fedprune.privacy.policy import PrivacyPolicy
from fedprune.training import train_sgd
from fedprune.training.recipe import steps_for


@pytest.fixture
def store(tmp_path: Path) -> LedgerStore:
    """The node's ledger store (one directory per test)."""
    return LedgerStore(tmp_path / "ledgers")


def _round(
    config: RunConfig,
    model: nn.Module,
    mask: ParameterMask,
    store: LedgerStore,
    *,
    policy: PrivacyPolicy | None = None,
    server_round: int = 1,
    partition_id: int = 0,
) -> ClientRoundResult:
    return run_client_round(
        config,
        partition_id=partition_id,
        num_partitions=config.federated.num_clients,
        global_arrays=model_to_arrays(model),
        mask=mask,
        server_round=server_round,
        policy=policy if policy is not None else PrivacyPolicy(),
        store=store,
    )


def _ledger(store: LedgerStore, config: RunConfig, partition_id: int = 0) -> PrivacyLedger:
    """The client's ledger as persisted in ``store``."""
    return store.open(
        ledger_holder(config, partition_id),
        accountant=config.privacy.accountant,
        delta=config.privacy.delta,
    )


def _rdp_epsilon(sigma: float, q: float, steps: int, delta: float) -> float:
    accountant = RDPAccountant()
    accountant.history = [(sigma, q, steps)]
    return float(accountant.get_epsilon(delta=delta))


REPRODUCIBLE = PrivacyPolicy(reproducible_noise=True)
NON_PRIVATE_OK = PrivacyPolicy(allow_non_private=True)


def test_update_covers_exactly_the_selected_coordinates(
    small_config: RunConfig, fresh_model: nn.Module, mask: ParameterMask, store: LedgerStore
) -> None:
    before = model_to_arrays(fresh_model)
    result = _round(small_config, fresh_model, mask, store)

    assert result.update.shape == (mask.num_selected,)
    assert result.update.dtype == np.float32
    assert np.isfinite(result.update).all()
    assert np.count_nonzero(result.update) > 0.9 * mask.num_selected
    n = len(client_partition(small_config.data, seed=0, partition_id=0, num_partitions=3))
    assert result.num_examples == n
    assert result.metrics[METRIC_PARTITION_ID] == 0
    assert result.metrics[METRIC_REFUSED] == ""
    assert result.metrics[METRIC_ACCOUNTANT] == "rdp"
    assert result.metrics[METRIC_DELTA] == small_config.privacy.delta
    assert 0 < result.metrics[METRIC_TRAIN_S] <= result.metrics[METRIC_FIT_S]
    # the caller's global arrays are left alone
    for a, b in zip(before, model_to_arrays(fresh_model), strict=True):
        np.testing.assert_array_equal(a, b)


def test_round_is_deterministic_given_the_config_with_reproducible_noise(
    small_config: RunConfig, fresh_model: nn.Module, mask: ParameterMask, tmp_path: Path
) -> None:
    # the node's research opt-in; each round on a fresh ledger so that budgets play no part
    def run(name: str, server_round: int = 1) -> ClientRoundResult:
        store = LedgerStore(tmp_path / name)
        return _round(
            small_config, fresh_model, mask, store, policy=REPRODUCIBLE, server_round=server_round
        )

    a, b = run("a"), run("b")
    assert a.metrics[METRIC_NOISE] == "reproducible"
    np.testing.assert_array_equal(a.update, b.update)
    c = run("c", server_round=2)
    assert not np.array_equal(a.update, c.update)  # fresh noise and batches each round


def test_secure_noise_is_the_default_and_not_reproducible_from_the_config(
    small_config: RunConfig, fresh_model: nn.Module, mask: ParameterMask, tmp_path: Path
) -> None:
    # The server knows the config (seed included); with secure noise it cannot replay a round.
    a = _round(small_config, fresh_model, mask, LedgerStore(tmp_path / "a"))
    b = _round(small_config, fresh_model, mask, LedgerStore(tmp_path / "b"))
    assert a.metrics[METRIC_NOISE] == b.metrics[METRIC_NOISE] == "secure"
    assert not np.array_equal(a.update, b.update)
    assert a.metrics[METRIC_EPSILON] == b.metrics[METRIC_EPSILON]  # same mechanism, same cost


def test_ledger_composes_across_rounds_like_one_accountant(
    small_config: RunConfig, fresh_model: nn.Module, mask: ParameterMask, store: LedgerStore
) -> None:
    n = len(client_partition(small_config.data, seed=0, partition_id=1, num_partitions=3))
    q, round_steps = steps_for(
        num_examples=n,
        batch_size=small_config.optim.batch_size,
        epochs=small_config.federated.local_epochs,
    )
    rounds = small_config.federated.num_rounds
    epsilons = []
    sigmas = set()
    for server_round in range(1, rounds + 1):
        result = _round(
            small_config, fresh_model, mask, store, server_round=server_round, partition_id=1
        )
        ledger = _ledger(store, small_config, partition_id=1)  # as persisted on the node
        sigma = float(result.metrics[METRIC_NOISE_MULTIPLIER])
        sigmas.add(sigma)
        steps = server_round * round_steps
        expected = _rdp_epsilon(sigma, q, steps, small_config.privacy.delta)
        assert result.metrics[METRIC_SAMPLE_RATE] == q
        assert result.metrics[METRIC_ROUND_STEPS] == round_steps
        assert result.metrics[METRIC_STEPS] == steps == ledger.steps
        assert result.metrics[METRIC_EPSILON] == pytest.approx(expected, rel=1e-9)
        assert ledger.epsilon() == pytest.approx(expected, rel=1e-9)
        epsilons.append(ledger.epsilon())

    assert len(sigmas) == 1  # one mechanism, calibrated once for all rounds
    assert epsilons == sorted(epsilons)
    target = small_config.privacy.target_epsilon
    # calibrated for all rounds: the full budget is spent, never exceeded (Opacus tolerance 0.01)
    assert target - 0.02 <= epsilons[-1] <= target


def test_client_refuses_before_any_step_when_over_budget(
    small_config: RunConfig, fresh_model: nn.Module, mask: ParameterMask, store: LedgerStore
) -> None:
    config = small_config.replace(**{"privacy.max-epsilon": 0.5})

    result = _round(config, fresh_model, mask, store)

    assert result.num_examples == 0
    np.testing.assert_array_equal(result.update, np.zeros(mask.num_selected, np.float32))
    assert "max_epsilon=0.5" in str(result.metrics[METRIC_REFUSED])
    assert result.metrics[METRIC_ROUND_STEPS] == 0
    assert result.metrics[METRIC_STEPS] == 0
    assert result.metrics[METRIC_EPSILON] == 0.0
    assert METRIC_TRAIN_S not in result.metrics and METRIC_FIT_S not in result.metrics
    assert _ledger(store, config).entries == []


def test_refusal_after_training_leaves_the_ledger_unchanged(
    small_config: RunConfig, fresh_model: nn.Module, mask: ParameterMask, store: LedgerStore
) -> None:
    first = _round(small_config, fresh_model, mask, store)
    eps_one_round = _ledger(store, small_config).epsilon()
    # a budget between one round's and two rounds' spend: round 2 must be refused
    budget = (eps_one_round + small_config.privacy.target_epsilon) / 2
    tight = small_config.replace(**{"privacy.max-epsilon": budget})
    entries = _ledger(store, small_config).entries

    second = _round(tight, fresh_model, mask, store, server_round=2)

    assert first.num_examples > 0 and first.metrics[METRIC_REFUSED] == ""
    assert second.num_examples == 0
    assert "max_epsilon" in str(second.metrics[METRIC_REFUSED])
    assert not second.update.any()
    after = _ledger(store, small_config)
    assert after.entries == entries
    assert after.max_epsilon == pytest.approx(budget)  # a tighter budget is kept, never loosened
    assert second.metrics[METRIC_EPSILON] == eps_one_round
    assert second.metrics[METRIC_STEPS] == first.metrics[METRIC_STEPS]


def test_non_private_round_claims_no_epsilon(
    small_config: RunConfig, fresh_model: nn.Module, mask: ParameterMask, store: LedgerStore
) -> None:
    config = small_config.replace(**{"privacy.enabled": False})
    result = _round(config, fresh_model, mask, store, policy=NON_PRIVATE_OK)
    assert result.metrics[METRIC_REFUSED] == ""
    assert result.update.shape == (mask.num_selected,)
    assert np.count_nonzero(result.update) > 0
    assert METRIC_EPSILON not in result.metrics
    # no ledger was opened or written for a round that claims nothing
    assert not store.path_of(ledger_holder(config, 0)).exists()


def test_non_private_round_trains_only_the_selected_coordinates(
    small_config: RunConfig, fresh_model: nn.Module, store: LedgerStore
) -> None:
    # full-batch SGD (order-free) for 3 epochs; only the output layer is selected
    config = small_config.replace(
        **{"privacy.enabled": False, "optim.batch-size": 10_000, "federated.local-epochs": 3}
    )
    last = {"5.weight", "5.bias"}
    mask = ParameterMask(
        {
            n: torch.full(p.shape, n in last, dtype=torch.bool)
            for n, p in fresh_model.named_parameters()
        }
    )
    data = client_partition(config.data, seed=0, partition_id=0, num_partitions=3).dataset

    def local_sgd(frozen: set[str]) -> np.ndarray:
        model = copy.deepcopy(fresh_model)
        for name, p in model.named_parameters():
            p.requires_grad_(name not in frozen)
        train_sgd(model, data, epochs=3, lr=config.optim.lr, batch_size=10_000, momentum=0.0)
        return (mask.gather(dict(model.named_parameters())) - mask.gather(before)).numpy()

    before = {n: p.detach().clone() for n, p in fresh_model.named_parameters()}
    masked = local_sgd({n for n in before if n not in last})
    dense = local_sgd(set())

    result = _round(config, fresh_model, mask, store, policy=NON_PRIVATE_OK)

    np.testing.assert_allclose(result.update, masked, atol=1e-6)
    assert not np.allclose(result.update, dense, atol=1e-4)


def test_global_arrays_of_another_model_are_rejected(
    small_config: RunConfig, fresh_model: nn.Module, mask: ParameterMask, store: LedgerStore
) -> None:
    other = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    with pytest.raises(ValueError, match="arrays for the model"):
        _round(small_config, other, mask, store)


@pytest.mark.parametrize("scheme", ["iid", "dirichlet", "shards"])
def test_partitions_are_disjoint_and_cover_the_private_set(
    small_config: RunConfig, digits_split: PublicPrivateSplit, scheme: str
) -> None:
    data = small_config.replace(**{"data.partition": scheme}).data
    parts = [client_partition(data, seed=0, partition_id=i, num_partitions=3) for i in range(3)]
    assert all(len(p) > 0 for p in parts)

    def rows(x: torch.Tensor, y: torch.Tensor) -> list[bytes]:
        flat = np.concatenate([x.reshape(len(x), -1).numpy(), y[:, None].numpy()], axis=1)
        return sorted(r.tobytes() for r in flat.astype(np.float64))

    combined = rows(
        torch.cat([p.dataset.tensors[0] for p in parts]),
        torch.cat([p.dataset.tensors[1] for p in parts]),
    )
    private = rows(*digits_split.private.dataset.tensors)
    # as multisets of (image, label) records: every private record in exactly one partition
    assert combined == private
    assert sum(len(p) for p in parts) == len(digits_split.private)


def test_partition_id_out_of_range(small_config: RunConfig) -> None:
    with pytest.raises(ValueError, match=r"expected partition_id in \[0, 3\), got 3"):
        client_partition(small_config.data, seed=0, partition_id=3, num_partitions=3)


def test_secagg_clipping_is_counted_from_the_scaled_update(small_config: RunConfig) -> None:
    from fedprune.federated.client_round import secagg_clipped

    config = small_config.replace(**{"secagg.max-weight": 100.0, "secagg.clipping-range": 1.0})
    update = np.array([0.5, -0.5, 0.2, 0.0], dtype=np.float32)
    # scaled by 300/100 = 3: |1.5|, |-1.5| exceed 1.0; 0.6 and 0 do not.
    assert secagg_clipped(update, num_examples=300, config=config) == 2
    assert secagg_clipped(update, num_examples=100, config=config) == 0


def test_client_above_secagg_max_weight_refuses_before_spending(
    small_config: RunConfig, fresh_model: nn.Module, mask: ParameterMask, store: LedgerStore
) -> None:
    n = len(client_partition(small_config.data, seed=0, partition_id=0, num_partitions=3))
    config = small_config.replace(**{"secagg.max-weight": float(n - 1)})

    result = _round(config, fresh_model, mask, store)

    assert result.num_examples == 0
    assert not result.update.any()
    assert "secagg.max-weight" in str(result.metrics[METRIC_REFUSED])
    assert result.metrics[METRIC_ROUND_STEPS] == 0
    assert not store.path_of(ledger_holder(config, 0)).exists()  # no budget touched
    # at exactly max-weight records the client trains
    exact = _round(
        small_config.replace(**{"secagg.max-weight": float(n)}), fresh_model, mask, store
    )
    assert exact.metrics[METRIC_REFUSED] == "" and exact.num_examples == n
