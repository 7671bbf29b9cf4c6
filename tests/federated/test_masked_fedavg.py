"""``MaskedDPFedAvg`` on a ``FederatedServer`` without Ray: hooks driven with hand-made replies."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from flwr.server.client_manager import SimpleClientManager
from torch import nn

import fedprune.federated.server_state as server_state_module
from fedprune.config import RunConfig
from fedprune.data import PublicPrivateSplit
from fedprune.federated import FederatedServer, model_to_arrays
from fedprune.federated.protocol import CONFIG_MASK, CONFIG_ROUND, METRIC_FIT_S, METRIC_TRAIN_S
from fedprune.masks import ParameterMask
from fedprune.pipeline import build_model, pick_mask
from fedprune.summary import HolderSpend, RunSummary, format_table
from server.legacy import ndarrays_to_parameters, parameters_to_ndarrays
from server.strategy import MaskedDPFedAvg

NUM_CLIENTS = 3
MakeStrategy = Callable[..., MaskedDPFedAvg]
Reply = Callable[..., Any]


@pytest.fixture
def make_strategy(small_config: RunConfig, digits_split: PublicPrivateSplit) -> MakeStrategy:
    def make(*, secure: bool = False, **flat: Any) -> MaskedDPFedAvg:
        config = small_config.replace(**flat)
        server = FederatedServer(
            config=config,
            split=digits_split,
            model=build_model(config, digits_split),
            secure=secure,
            public_only_accuracy=0.5,
            progress=False,
        )
        return MaskedDPFedAvg(server)

    return make


@pytest.fixture
def client_manager(make_reply: Reply) -> SimpleClientManager:
    manager = SimpleClientManager()
    for pid in range(NUM_CLIENTS):
        proxy, _ = make_reply(np.zeros(1), partition_id=pid, num_examples=1)
        manager.register(proxy)
    return manager


def _params(model: nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def _assert_unselected_unchanged(
    mask: ParameterMask, before: dict[str, torch.Tensor], model: nn.Module
) -> None:
    after = dict(model.named_parameters())
    for name, sel in mask.items():
        assert torch.equal(after[name].detach()[~sel], before[name][~sel]), name


def _moved(mask: ParameterMask, before: dict[str, torch.Tensor], model: nn.Module) -> np.ndarray:
    return (mask.gather(dict(model.named_parameters())) - mask.gather(before)).numpy()


def _start_round(
    strategy: MaskedDPFedAvg, manager: SimpleClientManager, server_round: int = 1
) -> ParameterMask:
    params = strategy.initialize_parameters(manager)
    assert params is not None
    strategy.configure_fit(server_round, params, manager)
    assert strategy.server.mask is not None
    return strategy.server.mask


def _random_updates(k: int, count: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [(rng.normal(size=k) * 0.01).astype(np.float32) for _ in range(count)]


# -- configure_fit --------------------------------------------------------------------------


def test_initial_parameters_are_the_global_model(
    make_strategy: MakeStrategy, client_manager: SimpleClientManager
) -> None:
    strategy = make_strategy()
    params = strategy.initialize_parameters(client_manager)
    assert params is not None
    for got, want in zip(
        parameters_to_ndarrays(params), model_to_arrays(strategy.server.model), strict=True
    ):
        np.testing.assert_array_equal(got, want)


def test_configure_fit_sends_parameters_mask_and_round_only(
    make_strategy: MakeStrategy, client_manager: SimpleClientManager
) -> None:
    strategy = make_strategy()
    params = strategy.initialize_parameters(client_manager)
    assert params is not None

    instructions = strategy.configure_fit(1, params, client_manager)

    assert sorted(proxy.cid for proxy, _ in instructions) == ["0", "1", "2"]
    server = strategy.server
    mask = server.mask
    assert mask is not None
    # picked from the global model and public data only, reproducibly from the seed
    expected = pick_mask(
        server.model,
        server.config.mask,
        server.split.public,
        seed=server.config.seed,
        round_number=1,
    )
    assert mask == expected
    assert mask.num_selected == pytest.approx(0.1 * mask.num_total, abs=1)
    for _, ins in instructions:
        assert ins.parameters is params
        assert ins.config[CONFIG_ROUND] == 1
        assert isinstance(ins.config[CONFIG_MASK], bytes)
        assert ParameterMask.from_bytes(ins.config[CONFIG_MASK]) == mask
        # the run's settings reach clients through context.run_config, never this message
        assert set(ins.config) == {CONFIG_ROUND, CONFIG_MASK}


@pytest.mark.parametrize(
    ("mode", "every", "local_epochs", "picked"),
    [
        ("freeze", 1, 1, [1]),
        ("freeze", 2, 1, [1]),
        ("select", 1, 1, [1, 2, 3, 4, 5]),
        ("select", 2, 1, [1, 3, 5]),
        # select-every counts epochs: rounds of 2 local epochs re-pick every round
        ("select", 2, 2, [1, 2, 3, 4, 5]),
        ("select", 3, 2, [1, 3, 5]),
    ],
)
def test_new_mask_only_when_due(
    make_strategy: MakeStrategy,
    client_manager: SimpleClientManager,
    monkeypatch: pytest.MonkeyPatch,
    mode: str,
    every: int,
    local_epochs: int,
    picked: list[int],
) -> None:
    strategy = make_strategy(
        **{
            "mask.mode": mode,
            "mask.select-every": every,
            "mask.strategy": "random",
            "federated.local-epochs": local_epochs,
            "federated.num-rounds": 5,
        }
    )
    rounds_picked: list[int] = []

    def spy(*args: Any, round_number: int, **kwargs: Any) -> ParameterMask:
        rounds_picked.append(round_number)
        return pick_mask(*args, round_number=round_number, **kwargs)

    monkeypatch.setattr(server_state_module, "pick_mask", spy)
    params = strategy.initialize_parameters(client_manager)
    assert params is not None
    sent = []
    for server_round in range(1, 6):
        instructions = strategy.configure_fit(server_round, params, client_manager)
        masks = {bytes(ins.config[CONFIG_MASK]) for _, ins in instructions}  # type: ignore[arg-type]
        assert len(masks) == 1  # every client gets the same mask
        sent.append(masks.pop())

    assert rounds_picked == picked
    # a re-pick with the random strategy draws a different mask; otherwise the old one is re-sent
    changed = [r for r in range(2, 6) if sent[r - 1] != sent[r - 2]]
    assert changed == [r for r in picked if r > 1]


# -- aggregate_fit ----------------------------------------------------------------------------


def test_plain_aggregate_is_the_weighted_mean_on_selected_coordinates(
    make_strategy: MakeStrategy, client_manager: SimpleClientManager, make_reply: Reply
) -> None:
    strategy = make_strategy(**{"federated.server-lr": 0.5})
    mask = _start_round(strategy, client_manager)
    before = _params(strategy.server.model)
    updates = _random_updates(mask.num_selected, 3)
    sizes = [100, 300, 50]
    results = [
        make_reply(u, partition_id=i, num_examples=n)
        for i, (u, n) in enumerate(zip(updates, sizes, strict=True))
    ]

    params, _ = strategy.aggregate_fit(1, results, [])

    weighted = sum(n * u.astype(np.float64) for n, u in zip(sizes, updates, strict=True)) / sum(
        sizes
    )
    assert not np.allclose(weighted, np.mean(updates, axis=0), atol=1e-5)  # weights matter
    np.testing.assert_allclose(
        _moved(mask, before, strategy.server.model), 0.5 * weighted, atol=1e-7
    )
    _assert_unselected_unchanged(mask, before, strategy.server.model)
    assert params is not None
    for got, want in zip(
        parameters_to_ndarrays(params), model_to_arrays(strategy.server.model), strict=True
    ):
        np.testing.assert_array_equal(got, want)
    row = strategy.server.summary.rounds[-1]
    assert row.round == 1
    assert row.clients_trained == 3
    assert row.clients_refused == []
    assert row.failures == 0
    assert row.skipped == ""
    assert row.update_norm == pytest.approx(np.linalg.norm(weighted), rel=1e-5)


def test_secure_aggregate_applies_the_already_averaged_vector(
    make_strategy: MakeStrategy, client_manager: SimpleClientManager, make_reply: Reply
) -> None:
    strategy = make_strategy(secure=True, **{"federated.server-lr": 2.0})
    mask = _start_round(strategy, client_manager)
    before = _params(strategy.server.model)
    # SecAgg+ hands every result the same float64 weighted average; weights stay per client
    average = np.random.default_rng(1).normal(size=mask.num_selected) * 0.01
    results = [
        make_reply(average, partition_id=0, num_examples=100),
        make_reply(average, partition_id=1, num_examples=0, refused="over budget"),
        make_reply(average, partition_id=2, num_examples=300),
    ]
    for _, res in results:  # the workflow puts its dequantised float64 vector into each result
        res.parameters = ndarrays_to_parameters([average])

    strategy.aggregate_fit(1, results, [])

    expected = mask.gather(before) + torch.from_numpy(average.astype(np.float32)) * 2.0
    assert torch.equal(mask.gather(dict(strategy.server.model.named_parameters())), expected)
    _assert_unselected_unchanged(mask, before, strategy.server.model)
    row = strategy.server.summary.rounds[-1]
    assert row.clients_refused == [1]
    assert row.clients_trained == 2


def test_refused_clients_are_recorded_and_do_not_move_the_model(
    make_strategy: MakeStrategy, client_manager: SimpleClientManager, make_reply: Reply
) -> None:
    strategy = make_strategy()
    mask = _start_round(strategy, client_manager)
    before = _params(strategy.server.model)
    u0, u1, u2 = _random_updates(mask.num_selected, 3)
    reason = "refusing to train: ... above the budget max_epsilon=8"
    results = [
        make_reply(u0, partition_id=0, num_examples=200),
        # even a (buggy) non-zero vector from a refusing client carries no weight
        make_reply(u1 * 1000, partition_id=1, num_examples=0, refused=reason),
        make_reply(u2, partition_id=2, num_examples=100),
    ]

    strategy.aggregate_fit(1, results, [])

    expected = (200 * u0.astype(np.float64) + 100 * u2) / 300
    np.testing.assert_allclose(_moved(mask, before, strategy.server.model), expected, atol=1e-7)
    _assert_unselected_unchanged(mask, before, strategy.server.model)
    row = strategy.server.summary.rounds[-1]
    assert row.clients_trained == 2
    assert row.clients_refused == [1]
    holders = strategy.server.summary.holders
    assert holders["1"].rounds_refused == 1
    assert holders["1"].rounds_trained == 0
    assert holders["1"].refused == reason
    assert holders["0"].rounds_trained == 1
    assert holders["0"].refused == ""


@pytest.mark.parametrize("secure", [False, True])
def test_all_refused_round_skips_the_update(
    make_strategy: MakeStrategy,
    client_manager: SimpleClientManager,
    make_reply: Reply,
    secure: bool,
) -> None:
    strategy = make_strategy(secure=secure)
    mask = _start_round(strategy, client_manager)
    before = _params(strategy.server.model)
    # SecAgg+ divides by the total weight, 0 here: its "average" is NaN
    vector = np.full(mask.num_selected, np.nan if secure else 0.0)
    results = [
        make_reply(vector, partition_id=i, num_examples=0, refused="over budget")
        for i in range(NUM_CLIENTS)
    ]

    params, _ = strategy.aggregate_fit(1, results, [])

    for name, value in strategy.server.model.named_parameters():
        assert torch.equal(value.detach(), before[name]), name
    assert params is not None
    row = strategy.server.summary.rounds[-1]
    assert row.skipped == "no client trained"
    assert row.clients_trained == 0
    assert row.clients_refused == [0, 1, 2]
    assert row.failures == 0  # refusals, not malformed replies
    assert row.update_norm is None
    assert all(h.rounds_refused == 1 for h in strategy.server.summary.holders.values())


def test_failures_are_counted(
    make_strategy: MakeStrategy, client_manager: SimpleClientManager, make_reply: Reply
) -> None:
    strategy = make_strategy()
    mask = _start_round(strategy, client_manager)
    (u,) = _random_updates(mask.num_selected, 1)
    strategy.aggregate_fit(
        1, [make_reply(u, partition_id=0, num_examples=10)], [RuntimeError("client crashed")]
    )
    assert strategy.server.summary.rounds[-1].failures == 1
    assert strategy.server.summary.rounds[-1].clients_trained == 1


# -- evaluate, per-client records, summary and checkpoint -------------------------------------


def test_evaluate_records_halted_rounds(
    make_strategy: MakeStrategy, client_manager: SimpleClientManager, make_reply: Reply
) -> None:
    strategy = make_strategy()
    mask = _start_round(strategy, client_manager)
    params = strategy.initialize_parameters(client_manager)
    assert params is not None
    assert strategy.evaluate(0, params) is None  # no evaluation before round 1 ...
    assert strategy.server.summary.rounds == []  # ... and it is not a round
    (u,) = _random_updates(mask.num_selected, 1)
    strategy.aggregate_fit(1, [make_reply(u, partition_id=0, num_examples=10)], [])
    strategy.evaluate(1, params)
    before = _params(strategy.server.model)

    # round 2: SecAgg+ halted, so aggregate_fit was never called
    strategy.configure_fit(2, params, client_manager)
    result = strategy.evaluate(2, params)

    assert result is not None
    loss, metrics = result
    rounds = strategy.server.summary.rounds
    row = rounds[-1]
    assert row.round == 2
    assert row.skipped == "secure aggregation halted"
    assert row.test_accuracy == metrics["accuracy"]
    assert row.test_loss == loss
    assert [r.round for r in rounds] == [1, 2]
    assert rounds[0].skipped == ""
    for name, value in strategy.server.model.named_parameters():
        assert torch.equal(value.detach(), before[name]), name


def test_per_client_metrics_are_kept_with_the_latest_values(
    make_strategy: MakeStrategy, client_manager: SimpleClientManager, make_reply: Reply
) -> None:
    strategy = make_strategy()
    mask = _start_round(strategy, client_manager)
    k = mask.num_selected
    strategy.aggregate_fit(
        1,
        [
            make_reply(np.zeros(k), partition_id=0, num_examples=40, epsilon=1.0, steps=7),
            make_reply(np.zeros(k), partition_id=1, num_examples=50, epsilon=1.0, steps=7),
        ],
        [],
    )
    strategy.aggregate_fit(
        2,
        [
            make_reply(np.zeros(k), partition_id=0, num_examples=40, epsilon=1.5, steps=14),
            make_reply(
                np.zeros(k), partition_id=1, num_examples=0, epsilon=1.0, steps=7, refused="no"
            ),
        ],
        [],
    )

    holders = strategy.server.summary.holders
    assert set(holders) == {"0", "1"}
    c0, c1 = holders["0"], holders["1"]
    assert c0.epsilon == 1.5
    assert c0.steps == 14
    assert c0.rounds_trained == 2
    assert c0.num_examples == 40
    assert c0.noise_multiplier == 0.9
    assert c0.sample_rate == 0.07
    assert c0.delta == 1e-5
    assert c0.accountant == "rdp"
    # a refused round keeps the partition size and the unchanged ledger figures
    assert (c1.rounds_trained, c1.rounds_refused) == (1, 1)
    assert c1.num_examples == 50
    assert (c1.epsilon, c1.steps) == (1.0, 7)
    assert "partition_id" not in dataclasses.asdict(c0)
    assert strategy.server.summary.epsilon == 1.5  # the largest spend of any holder


# -- malformed replies --------------------------------------------------------------------------


@pytest.mark.parametrize("problem", ["short", "long", "nan", "inf", "negative-weight"])
def test_a_malformed_reply_is_dropped_and_the_round_goes_on(
    make_strategy: MakeStrategy,
    client_manager: SimpleClientManager,
    make_reply: Reply,
    problem: str,
) -> None:
    strategy = make_strategy()
    mask = _start_round(strategy, client_manager)
    before = _params(strategy.server.model)
    u0, u1, u2 = _random_updates(mask.num_selected, 3)
    bad, weight = u1.copy(), 200
    if problem == "short":
        bad = bad[:-1]
    elif problem == "long":
        bad = np.concatenate([bad, [0.0]]).astype(np.float32)
    elif problem in {"nan", "inf"}:
        bad[5] = np.nan if problem == "nan" else np.inf
    else:
        weight = -200
    results = [
        make_reply(u0, partition_id=0, num_examples=100),
        make_reply(bad, partition_id=1, num_examples=weight, epsilon=9.0),
        make_reply(u2, partition_id=2, num_examples=50),
    ]

    strategy.aggregate_fit(1, results, [])

    expected = (100 * u0.astype(np.float64) + 50 * u2) / 150
    np.testing.assert_allclose(_moved(mask, before, strategy.server.model), expected, atol=1e-7)
    _assert_unselected_unchanged(mask, before, strategy.server.model)
    assert all(torch.isfinite(p).all() for p in strategy.server.model.parameters())
    row = strategy.server.summary.rounds[-1]
    assert row.failures == 1
    assert row.clients_trained == 2
    assert row.skipped == ""
    # the client is named, but nothing the malformed reply claimed enters the summary
    holders = strategy.server.summary.holders
    assert set(holders) == {"0", "1", "2"}
    assert dataclasses.asdict(holders["1"]) == dataclasses.asdict(HolderSpend(rounds_malformed=1))
    assert holders["0"].rounds_malformed == holders["2"].rounds_malformed == 0
    assert strategy.server.summary.epsilon == 1.25  # not the 9.0 the malformed reply claimed
    # the run goes on: the next round is evaluated and aggregated as usual
    params = strategy.initialize_parameters(client_manager)
    assert params is not None
    assert strategy.evaluate(1, params) is not None
    strategy.configure_fit(2, params, client_manager)
    strategy.aggregate_fit(2, [make_reply(u0, partition_id=0, num_examples=100)], [])
    assert strategy.server.summary.rounds[-1].clients_trained == 1


def test_a_round_of_only_malformed_replies_leaves_the_model_alone(
    make_strategy: MakeStrategy, client_manager: SimpleClientManager, make_reply: Reply
) -> None:
    strategy = make_strategy()
    mask = _start_round(strategy, client_manager)
    before = _params(strategy.server.model)
    strategy.aggregate_fit(
        1,
        [
            make_reply(np.zeros(mask.num_selected - 3), partition_id=0, num_examples=10),
            make_reply(np.full(mask.num_selected, np.nan), partition_id=1, num_examples=10),
        ],
        [RuntimeError("client crashed")],
    )
    for name, value in strategy.server.model.named_parameters():
        assert torch.equal(value.detach(), before[name]), name
    row = strategy.server.summary.rounds[-1]
    assert row.failures == 3
    assert row.skipped == "no client trained"


# -- evaluate, summary and checkpoint ---------------------------------------------------------


def test_summary_and_checkpoint_files(
    make_strategy: MakeStrategy,
    client_manager: SimpleClientManager,
    make_reply: Reply,
    tmp_path: Path,
) -> None:
    strategy = make_strategy(**{"out-dir": str(tmp_path / "run")})
    server = strategy.server
    mask = _start_round(strategy, client_manager)
    params = strategy.initialize_parameters(client_manager)
    assert params is not None
    u0, u1 = _random_updates(mask.num_selected, 2)
    strategy.aggregate_fit(
        1,
        [
            make_reply(u0, partition_id=0, num_examples=40),
            make_reply(u1, partition_id=1, num_examples=60),
        ],
        [],
    )
    result = strategy.evaluate(1, params)
    assert result is not None

    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["kind"] == "federated"
    assert summary["secure_aggregation"] is False
    assert summary["test_accuracy"] == result[1]["accuracy"]
    assert summary["public_only_test_accuracy"] == 0.5
    assert summary["rounds_completed"] == 1
    assert summary["trained_coordinates"] == mask.num_selected
    assert summary["total_coordinates"] == mask.num_total
    assert [r["round"] for r in summary["rounds"]] == [1]
    assert summary["rounds"][0]["test_accuracy"] == result[1]["accuracy"]
    assert summary["rounds"][0]["skipped"] == ""
    assert set(summary["holders"]) == {"0", "1"}
    assert summary["holders"]["1"]["num_examples"] == 60
    assert RunConfig.from_flat(summary["config"]) == server.config
    fresh = json.loads(json.dumps(server.summary.to_dict()))
    assert {k: v for k, v in summary.items() if k != "duration_s"} == {
        k: v for k, v in fresh.items() if k != "duration_s"
    }
    assert RunSummary.read(tmp_path / "run").to_dict() == summary

    checkpoint = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)
    assert checkpoint["round"] == 1
    assert ParameterMask.from_bytes(checkpoint["mask"]) == mask
    # checkpoint.pt carries its own copy of the summary (config included)
    assert json.loads(checkpoint["summary"]) == summary
    state = server.model.state_dict()
    assert checkpoint["model"].keys() == state.keys()
    for name, value in state.items():
        assert torch.equal(checkpoint["model"][name], value), name
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == [
        "checkpoint.pt",
        "summary.json",
    ]  # no temporary files left behind


def test_no_files_without_out_dir(
    make_strategy: MakeStrategy,
    client_manager: SimpleClientManager,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    strategy = make_strategy(**{"out-dir": ""})
    _start_round(strategy, client_manager)
    params = strategy.initialize_parameters(client_manager)
    assert params is not None
    strategy.evaluate(1, params)
    assert list(cwd.iterdir()) == []


def test_report_table_lists_rounds_and_clients(
    make_strategy: MakeStrategy, client_manager: SimpleClientManager, make_reply: Reply
) -> None:
    strategy = make_strategy()
    mask = _start_round(strategy, client_manager)
    params = strategy.initialize_parameters(client_manager)
    assert params is not None
    (u,) = _random_updates(mask.num_selected, 1)
    strategy.aggregate_fit(
        1,
        [
            make_reply(u, partition_id=0, num_examples=40, epsilon=1.25, steps=14),
            make_reply(np.zeros_like(u), partition_id=1, num_examples=0, refused="budget"),
        ],
        [],
    )
    strategy.evaluate(1, params)
    strategy.configure_fit(2, params, client_manager)
    strategy.evaluate(2, params)  # halted

    summary = strategy.server.summary
    lines = format_table(summary).splitlines()

    assert any(
        line.split()[:4] == ["1", f"{summary.rounds[0].test_accuracy:.4f}", "1", "1"]
        for line in lines
    )
    assert any("secure aggregation halted" in line for line in lines)
    assert any(line.split() == ["0", "40", "0.9", "0.07", "14", "1.25"] for line in lines)
    assert f"trained {mask.num_selected}/{mask.num_total} coordinates" in "\n".join(lines)


def test_a_refusing_reply_is_recorded_whatever_its_unused_values(
    make_strategy: MakeStrategy, client_manager: SimpleClientManager, make_reply: Reply
) -> None:
    # A zero-weight reply's values never enter the mean: NaN there is a refusal, not a failure
    strategy = make_strategy()
    mask = _start_round(strategy, client_manager)
    before = _params(strategy.server.model)
    u0, u2 = _random_updates(mask.num_selected, 2)
    results = [
        make_reply(u0, partition_id=0, num_examples=100),
        make_reply(
            np.full(mask.num_selected, np.nan), partition_id=1, num_examples=0, refused="budget"
        ),
        make_reply(u2, partition_id=2, num_examples=300),
    ]

    strategy.aggregate_fit(1, results, [])

    expected = (100 * u0.astype(np.float64) + 300 * u2) / 400
    np.testing.assert_allclose(_moved(mask, before, strategy.server.model), expected, atol=1e-7)
    row = strategy.server.summary.rounds[-1]
    assert (row.failures, row.clients_trained, row.clients_refused) == (0, 2, [1])
    assert strategy.server.summary.holders["1"].refused == "budget"


def test_clients_reported_wall_times_are_kept_per_round_when_plausible(
    make_strategy: MakeStrategy, client_manager: SimpleClientManager, make_reply: Reply
) -> None:
    strategy = make_strategy()
    k = _start_round(strategy, client_manager).num_selected
    replies = [
        make_reply(np.zeros(k), partition_id=0, num_examples=40),
        make_reply(np.zeros(k), partition_id=1, num_examples=40),
        make_reply(np.zeros(k), partition_id=2, num_examples=0, refused="over budget"),
    ]
    claims = [(0.5, 0.75), (float("nan"), -1.0), (0.25, 0.5)]
    for (_, res), (train_s, fit_s) in zip(replies, claims, strict=True):
        res.metrics |= {METRIC_TRAIN_S: train_s, METRIC_FIT_S: fit_s}
    strategy.aggregate_fit(1, replies, [])

    row = strategy.server.summary.rounds[-1]
    assert row.client_train_s == {"0": 0.5}  # client 1's claims are not plausible; 2 refused
    assert row.client_fit_s == {"0": 0.75}
    assert RunSummary.from_dict(strategy.server.summary.to_dict()).rounds[-1] == row
