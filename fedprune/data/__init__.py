"""Datasets, public/private splits and federated partitions."""

from fedprune.data.datasets import (
    DATASETS,
    DatasetBundle,
    available_datasets,
    load_dataset,
    register_dataset,
)
from fedprune.data.partition import (
    PARTITION_SCHEMES,
    PartitionScheme,
    available_partition_schemes,
    client_dataset,
    partition_indices,
)
from fedprune.data.splits import (
    PUBLIC_KINDS,
    PrivateDataset,
    PublicDataset,
    PublicKind,
    PublicPrivateSplit,
    available_public_kinds,
    split_private_validation,
    split_public_private,
    split_public_validation,
    subsample_private,
)

__all__ = [  # noqa: RUF022 (plain sorted(), as tests/data/test_data_api.py checks)
    "DATASETS",
    "DatasetBundle",
    "PARTITION_SCHEMES",
    "PUBLIC_KINDS",
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
    "split_private_validation",
    "split_public_private",
    "split_public_validation",
    "subsample_private",
]
