"""Which private records a client trains on: a partition of the run's dataset, or its own.

A node says which in its node config (never the server):

``partition-id`` + ``num-partitions``
    Demos and simulations: the node re-derives partition ``partition-id`` of the run's dataset
    (:class:`PartitionData`); every node holds the dataset's files.
``data-dir`` + ``client-id``
    A real data holder: its own records in ``data-dir/records.npz``
    (:mod:`fedprune.data.records`), read on the node only (:class:`DirectoryData`); the node
    needs none of the dataset's files. ``client-id`` (an integer >= 0, one per node of the
    federation) is the id it reports to the server, which names it in the run summary.

Both kinds give :func:`fedprune.federated.run_client_round` the same four things (records,
task, ledger name, reported id), so the round itself -- training, ledger, policy -- is one code
path. :func:`node_data` parses a node config (cheap: nothing is read until :meth:`load`).
"""

from __future__ import annotations

import functools
import hashlib
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from fedprune.config import DataConfig, RunConfig
from fedprune.data import (
    RECORDS_FILE,
    DatasetTask,
    PrivateDataset,
    PublicPrivateSplit,
    client_dataset,
    dataset_task,
    load_records,
    partition_indices,
    save_records,
)
from fedprune.pipeline import load_split

__all__ = [
    "NODE_CLIENT_ID",
    "NODE_DATA_DIR",
    "NODE_NUM_PARTITIONS",
    "NODE_PARTITION_ID",
    "ClientData",
    "DirectoryData",
    "PartitionData",
    "check_partitions",
    "client_partition",
    "export_partitions",
    "ledger_holder",
    "node_data",
]

NODE_PARTITION_ID = "partition-id"
NODE_NUM_PARTITIONS = "num-partitions"
NODE_DATA_DIR = "data-dir"
NODE_CLIENT_ID = "client-id"


class ClientData(Protocol):
    """A client's source of private records (see the module docstring)."""

    @property
    def client_id(self) -> int:
        """The id the client reports (``METRIC_PARTITION_ID``) and derives its seeds from."""
        ...

    def describe(self) -> str:
        """Who holds the records, for messages (e.g. ``"client 3"``)."""
        ...

    def ledger_holder(self, config: RunConfig) -> str:
        """The ledger name of these records: the same for every run on them."""
        ...

    def task(self, config: RunConfig) -> DatasetTask:
        """The run's model shape (input ``(C, H, W)``, number of classes)."""
        ...

    def load(self, config: RunConfig) -> PrivateDataset:
        """The records, checked against :meth:`task`."""
        ...


@functools.lru_cache(maxsize=4)
def _cached_split(data: DataConfig, seed: int) -> PublicPrivateSplit:
    return load_split(data, seed=seed)


@functools.lru_cache(maxsize=8)
def client_partition(
    data: DataConfig, *, seed: int, partition_id: int, num_partitions: int
) -> PrivateDataset:
    """Client ``partition_id``'s share of the private split (cached per process).

    Every client derives the same split and partition from the run config, so the partitions
    are disjoint and cover the private set.
    """
    if not 0 <= partition_id < num_partitions:
        raise ValueError(f"expected partition_id in [0, {num_partitions}), got {partition_id}")
    private = _cached_split(data, seed).private
    parts = partition_indices(
        private.labels,
        num_clients=num_partitions,
        scheme=data.partition,
        seed=seed,
        alpha=data.dirichlet_alpha,
        shards_per_client=data.shards_per_client,
    )
    return client_dataset(private, parts[partition_id])


def check_partitions(config: RunConfig) -> None:
    """Check that the private split gives each of ``federated.num_clients`` clients records.

    Launchers call this before starting any client, so that a run asking for more clients than
    there are records fails at once, naming the setting, instead of in every client.

    Raises
    ------
    ValueError
        Naming ``federated.num-clients`` and why the partition is impossible.
    """
    n = config.federated.num_clients
    data = config.data
    try:
        partition_indices(
            _cached_split(data, config.seed).private.labels,
            num_clients=n,
            scheme=data.partition,
            seed=config.seed,
            alpha=data.dirichlet_alpha,
            shards_per_client=data.shards_per_client,
        )
    except ValueError as err:
        raise ValueError(f"config federated.num-clients={n}: {err}") from None


def ledger_holder(config: RunConfig, partition_id: int) -> str:
    """The ledger name of a client's data: one per dataset and partition, not per run, so a
    second run on the same records continues the same ledger."""
    return f"{config.data.dataset}-client-{partition_id}"


@dataclass(frozen=True)
class PartitionData:
    """Partition ``partition_id`` of ``num_partitions`` of the run's private split."""

    partition_id: int
    num_partitions: int

    @property
    def client_id(self) -> int:
        return self.partition_id

    def describe(self) -> str:
        return f"client {self.partition_id}"

    def ledger_holder(self, config: RunConfig) -> str:
        return ledger_holder(config, self.partition_id)

    def task(self, config: RunConfig) -> DatasetTask:
        split = _cached_split(config.data, config.seed)
        return DatasetTask(input_shape=split.input_shape, num_classes=split.num_classes)

    def load(self, config: RunConfig) -> PrivateDataset:
        return client_partition(
            config.data,
            seed=config.seed,
            partition_id=self.partition_id,
            num_partitions=self.num_partitions,
        )


@dataclass(frozen=True)
class DirectoryData:
    """The node's own records in ``data_dir`` (absolute), reported as client ``client_id``.

    Its ledger is named after the dataset and the directory's absolute path (not its contents),
    so records added to the directory stay under the same ledger; moving the directory starts
    another one, so keep a node's records where they are.
    """

    data_dir: Path
    client_id: int

    def describe(self) -> str:
        return f"client {self.client_id} ({self.data_dir})"

    def ledger_holder(self, config: RunConfig) -> str:
        digest = hashlib.sha256(str(self.data_dir).encode()).hexdigest()[:16]
        return f"{config.data.dataset}-records-{digest}"

    def task(self, config: RunConfig) -> DatasetTask:
        if config.data.features != "pixels":
            raise ValueError(
                f"{self.describe()}: data.features = {config.data.features!r} needs the public "
                "set (its statistics standardise the features), which a node with its own "
                "data-dir does not hold; use data.features = 'pixels' with data-dir nodes"
            )
        return dataset_task(
            config.data.dataset, data_dir=config.data.data_dir, download=config.data.download
        )

    def load(self, config: RunConfig) -> PrivateDataset:
        try:
            stat = (self.data_dir / RECORDS_FILE).stat()
            version: tuple[int, int] | None = (stat.st_mtime_ns, stat.st_size)
        except OSError:
            version = None  # load_records names the problem
        return _cached_records(self.data_dir, version, self.task(config), config.data.dataset)


@functools.lru_cache(maxsize=4)
def _cached_records(
    data_dir: Path, version: tuple[int, int] | None, task: DatasetTask, dataset: str
) -> PrivateDataset:
    """:func:`load_records`, cached per process while the file is unchanged (``version``)."""
    return load_records(data_dir, task=task, dataset=dataset)


def node_data(node_config: Mapping[str, Any]) -> ClientData:
    """The records a node's config points at (nothing is read yet).

    Raises
    ------
    ValueError
        Both or neither of ``partition-id`` and ``data-dir``; ``num-partitions`` missing for a
        partition, ``client-id`` for a directory; a value that is not an integer >= 0 (or, for
        ``data-dir``, not a non-empty path). The message names the node-config key.
    """
    has_partition = NODE_PARTITION_ID in node_config
    has_dir = NODE_DATA_DIR in node_config
    if has_partition == has_dir:
        raise ValueError(
            f"node config: expected exactly one of {NODE_PARTITION_ID!r} (a partition of the "
            f"run's dataset) or {NODE_DATA_DIR!r} (a directory of the node's own records), got "
            + ("both" if has_partition else "neither")
        )
    if has_partition:
        if NODE_NUM_PARTITIONS not in node_config:
            raise ValueError(f"node config: {NODE_PARTITION_ID!r} needs {NODE_NUM_PARTITIONS!r}")
        return PartitionData(
            partition_id=_non_negative_int(node_config, NODE_PARTITION_ID),
            num_partitions=_non_negative_int(node_config, NODE_NUM_PARTITIONS),
        )
    raw = node_config[NODE_DATA_DIR]
    if not isinstance(raw, str | os.PathLike) or not str(raw).strip():
        raise ValueError(f"node config {NODE_DATA_DIR}: expected a directory path, got {raw!r}")
    if NODE_CLIENT_ID not in node_config:
        raise ValueError(
            f"node config: {NODE_DATA_DIR!r} needs {NODE_CLIENT_ID!r} (an integer >= 0, the id "
            "this node reports to the server; one per node of the federation)"
        )
    return DirectoryData(
        data_dir=Path(raw).expanduser().resolve(),
        client_id=_non_negative_int(node_config, NODE_CLIENT_ID),
    )


def _non_negative_int(node_config: Mapping[str, Any], key: str) -> int:
    raw = node_config[key]
    try:
        value = int(raw) if not isinstance(raw, bool | float) else None
    except ValueError:
        value = None
    if value is None or value < 0:
        raise ValueError(f"node config {key}: expected an integer >= 0, got {raw!r}")
    return value


def export_partitions(config: RunConfig, out_dir: str | Path) -> list[Path]:
    """Write partition ``k`` of ``federated.num_clients`` as ``out_dir/node-k/records.npz``.

    For demos of nodes that hold their own records (``data-dir``): each directory can be given
    to one node (and, on real hosts, copied to it alone). Nothing is written when any target
    file already exists. Returns the directories, in partition order.

    Raises
    ------
    ValueError
        The partition is impossible (see :func:`check_partitions`), or a ``records.npz`` is
        already there (nothing was written).
    """
    check_partitions(config)
    n = config.federated.num_clients
    dirs = [Path(out_dir) / f"node-{k}" for k in range(n)]
    taken = [str(d / RECORDS_FILE) for d in dirs if (d / RECORDS_FILE).exists()]
    if taken:
        raise ValueError(f"refusing to overwrite node records: {taken} exist")
    for k, directory in enumerate(dirs):
        save_records(directory, PartitionData(k, n).load(config), dataset=config.data.dataset)
    return dirs
