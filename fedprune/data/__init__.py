"""Datasets, public/private splits and federated partitions."""

from fedprune.data.datasets import (
    DatasetBundle,
    available_datasets,
    load_dataset,
    register_dataset,
)
from fedprune.data.partition import (
    PartitionScheme,
    available_partition_schemes,
    client_dataset,
    partition_indices,
)
from fedprune.data.splits import (
    PrivateDataset,
    PublicDataset,
    PublicKind,
    PublicPrivateSplit,
    available_public_kinds,
    split_public_private,
)

__all__ = [
    "DatasetBundle",
    "PartitionScheme",
    "PrivateDataset",
    "PublicDataset",
    "PublicKind",
    "PublicPrivateSplit",
    "available_datasets",
    "available_partition_schemes",
    "available_public_kinds",
    "client_dataset",
    "load_dataset",
    "partition_indices",
    "register_dataset",
    "split_public_private",
]
