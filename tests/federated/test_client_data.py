"""A node pointed at its own records (node config ``data-dir``) instead of a partition.

The ClientApp's client trains on the directory's records, accounts for *their* number (sample
rate, steps, the delta check) in a ledger of their own, and otherwise takes the very same path
as a partition node: with the same records and reproducible noise, both reply identically.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from flwr.app import Context, RecordDict
from torch import nn
from torch.utils.data import TensorDataset

from clients.client_app import MaskedDPClient
from fedprune.config import RunConfig
from fedprune.data import PrivateDataset, save_records
from fedprune.federated import model_to_arrays, run_client_round
from fedprune.federated.client_data import (
    DirectoryData,
    PartitionData,
    client_partition,
    export_partitions,
    ledger_holder,
    node_data,
)
from fedprune.federated.protocol import (
    CONFIG_MASK,
    CONFIG_ROUND,
    METRIC_EPSILON,
    METRIC_FIT_S,
    METRIC_PARTITION_ID,
    METRIC_REFUSED,
    METRIC_SAMPLE_RATE,
    METRIC_STEPS,
    METRIC_TRAIN_S,
)
from fedprune.masks import ParameterMask
from fedprune.privacy.ledger_store import LedgerStore
from fedprune.privacy.policy import PrivacyPolicy
from fedprune.training.recipe import steps_for


def _fit(
    config: RunConfig, node: dict[str, Any], model: nn.Module, mask: ParameterMask, rnd: int = 1
) -> tuple[list[np.ndarray], int, dict[str, Any]]:
    """One fit message to a fresh client of a node with config ``node`` (as a SuperNode's)."""
    context = Context(
        run_id=1, node_id=1, node_config=node, state=RecordDict(), run_config=config.to_flat()
    )
    fit_config = {CONFIG_ROUND: rnd, CONFIG_MASK: mask.to_bytes()}
    return MaskedDPClient(context).fit(model_to_arrays(model), fit_config)


def _own_records(config: RunConfig, directory: Path, n: int) -> Path:
    """``n`` records (of partition 1: any records of the task would do) as a node's own."""
    x, y = client_partition(config.data, seed=0, partition_id=1, num_partitions=3).dataset.tensors
    save_records(directory, PrivateDataset(TensorDataset(x[:n], y[:n]), "own"))
    return directory


@pytest.mark.parametrize(
    ("node", "error"),
    [
        ({}, "exactly one of 'partition-id' .* or 'data-dir' .*, got neither"),
        ({"partition-id": 0, "num-partitions": 2, "data-dir": "/d"}, "got both"),
        ({"partition-id": 0}, "'partition-id' needs 'num-partitions'"),
        ({"data-dir": "/d"}, "'data-dir' needs 'client-id'"),
        ({"data-dir": "", "client-id": 1}, "node config data-dir: expected a directory path"),
        ({"data-dir": 3, "client-id": 1}, "node config data-dir: expected a directory path"),
        ({"data-dir": "/d", "client-id": -1}, "node config client-id: expected an integer >= 0"),
        ({"data-dir": "/d", "client-id": "x"}, "node config client-id: expected an integer"),
        ({"data-dir": "/d", "client-id": True}, "node config client-id: expected an integer"),
        ({"partition-id": 1.5, "num-partitions": 2}, "node config partition-id: expected"),
    ],
)
def test_a_node_config_names_exactly_one_source_of_records(
    node: dict[str, Any], error: str
) -> None:
    with pytest.raises(ValueError, match=error):
        node_data(node)


def test_node_configs_parse_to_partitions_or_directories(tmp_path: Path) -> None:
    assert node_data({"partition-id": "2", "num-partitions": 3}) == PartitionData(2, 3)
    parsed = node_data({"data-dir": str(tmp_path / "a" / ".." / "b"), "client-id": "5"})
    assert parsed == DirectoryData(data_dir=tmp_path / "b", client_id=5)


def test_a_data_dir_node_trains_on_its_own_records_and_accounts_for_their_number(
    small_config: RunConfig, fresh_model: nn.Module, mask: ParameterMask, tmp_path: Path
) -> None:
    n = 150  # not any partition's size: the node's own count must be the one used
    ledgers = tmp_path / "ledgers"
    node = {"data-dir": str(_own_records(small_config, tmp_path / "own", n)), "client-id": 7}
    node["ledger-dir"] = str(ledgers)
    batch = small_config.optim.batch_size
    rate, steps = steps_for(num_examples=n, batch_size=batch, epochs=1)

    for rnd in (1, 2):
        vectors, num_examples, metrics = _fit(small_config, node, fresh_model, mask, rnd)
        assert metrics[METRIC_REFUSED] == ""
        assert num_examples == n and vectors[0].shape == (mask.num_selected,)
        assert np.count_nonzero(vectors[0]) > 0
        assert metrics[METRIC_PARTITION_ID] == 7
        assert metrics[METRIC_SAMPLE_RATE] == pytest.approx(rate) == batch / n
        assert metrics[METRIC_STEPS] == rnd * steps

    holder = DirectoryData(tmp_path / "own", 7).ledger_holder(small_config)
    assert [p.name for p in ledgers.glob("*.ledger")] == [f"{holder}.ledger"]
    ledger = LedgerStore(ledgers).open(
        holder, accountant=small_config.privacy.accountant, delta=small_config.privacy.delta
    )
    assert ledger.steps == 2 * steps and ledger.epsilon() == metrics[METRIC_EPSILON]


def test_the_same_records_as_a_directory_or_a_partition_give_the_same_reply(
    small_config: RunConfig, fresh_model: nn.Module, mask: ParameterMask, tmp_path: Path
) -> None:
    dirs = export_partitions(small_config, tmp_path / "export")
    reproducible: dict[str, Any] = {"reproducible-noise": True}
    by_partition = _fit(
        small_config,
        {"partition-id": 1, "num-partitions": 3, "ledger-dir": str(tmp_path / "a")} | reproducible,
        fresh_model,
        mask,
    )
    by_directory = _fit(
        small_config,
        {
            "data-dir": str(dirs[1]),
            "client-id": 1,
            "ledger-dir": str(tmp_path / "b"),
            **reproducible,
        },
        fresh_model,
        mask,
    )
    assert np.count_nonzero(by_partition[0][0]) > 0
    assert np.array_equal(by_partition[0][0], by_directory[0][0])
    # Weight and every metric, epsilon included (wall times aside).
    timing = {METRIC_TRAIN_S, METRIC_FIT_S}
    assert by_partition[1] == by_directory[1]
    assert {k: v for k, v in by_partition[2].items() if k not in timing} == {
        k: v for k, v in by_directory[2].items() if k not in timing
    }
    # each under its own ledger name
    assert [p.name for p in (tmp_path / "a").glob("*.ledger")] == [
        f"{ledger_holder(small_config, 1)}.ledger"
    ]
    assert [p.name for p in (tmp_path / "b").glob("*.ledger")] == [
        f"{DirectoryData(dirs[1].resolve(), 1).ledger_holder(small_config)}.ledger"
    ]


def test_export_refuses_to_overwrite_and_writes_nothing(
    small_config: RunConfig, tmp_path: Path
) -> None:
    dirs = export_partitions(small_config, tmp_path)
    sizes = [
        len(client_partition(small_config.data, seed=0, partition_id=k, num_partitions=3))
        for k in range(3)
    ]
    before = [(d / "records.npz").read_bytes() for d in dirs]
    assert [len(DirectoryData(d, k).load(small_config)) for k, d in enumerate(dirs)] == sizes
    (dirs[0] / "records.npz").unlink()
    with pytest.raises(ValueError, match=r"overwrite node records: \[.*node-1/records\.npz"):
        export_partitions(small_config, tmp_path)
    assert not (dirs[0] / "records.npz").exists()
    assert [(d / "records.npz").read_bytes() for d in dirs[1:]] == before[1:]


def test_too_few_records_for_delta_are_refused_before_any_ledger_entry(
    small_config: RunConfig, fresh_model: nn.Module, mask: ParameterMask, tmp_path: Path
) -> None:
    config = small_config.replace(**{"privacy.delta": 0.2})
    own = _own_records(small_config, tmp_path / "few", 5)  # 1/5 = 0.2: delta not below it
    node = {"data-dir": str(own), "client-id": 3, "delta": 0.2, "ledger-dir": str(tmp_path / "l")}
    vectors, num_examples, metrics = _fit(config, node, fresh_model, mask)
    assert num_examples == 0 and not np.any(vectors[0])
    assert f"client 3 ({own}): delta=0.2 is not below 1/n = 1/5" in str(metrics[METRIC_REFUSED])
    assert not list((tmp_path / "l").glob("*.ledger"))


def test_a_bad_data_dir_fails_the_round_naming_it(
    small_config: RunConfig, fresh_model: nn.Module, mask: ParameterMask, tmp_path: Path
) -> None:
    node = {"data-dir": str(tmp_path / "nowhere"), "client-id": 0}
    with pytest.raises(FileNotFoundError, match=f"data-dir '{tmp_path / 'nowhere'}': no such"):
        _fit(small_config, node, fresh_model, mask)


def test_a_data_dir_node_refuses_features_that_need_the_public_set(
    small_config: RunConfig, tmp_path: Path
) -> None:
    (own,) = export_partitions(small_config.replace(**{"federated.num-clients": 1}), tmp_path)
    config = small_config.replace(**{"data.features": "scattering"})
    with pytest.raises(ValueError, match=r"data\.features = 'scattering' needs the public set"):
        DirectoryData(own, 0).load(config)


def test_run_client_round_takes_records_or_a_partition_not_both(
    small_config: RunConfig, fresh_model: nn.Module, mask: ParameterMask
) -> None:
    common: dict[str, Any] = {
        "global_arrays": model_to_arrays(fresh_model),
        "mask": mask,
        "server_round": 1,
        "policy": PrivacyPolicy(),
    }
    with pytest.raises(ValueError, match="not both"):
        run_client_round(small_config, partition_id=0, data=PartitionData(0, 3), **common)
    with pytest.raises(ValueError, match="expected data, or partition_id and num_partitions"):
        run_client_round(small_config, partition_id=0, **common)
