"""Datasets, public/private splits and federated partitions."""

from fedprune.data.datasets import (
    DATASETS,
    DatasetBundle,
    DatasetTask,
    available_datasets,
    dataset_task,
    load_dataset,
    register_dataset,
)
from fedprune.data.features import FEATURES, available_features, featurise_split
from fedprune.data.partition import (
    PARTITION_SCHEMES,
    PartitionScheme,
    available_partition_schemes,
    client_dataset,
    partition_indices,
)
from fedprune.data.records import RECORDS_FILE, load_records, save_records
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
    "DatasetTask",
    "FEATURES",
    "PARTITION_SCHEMES",
    "PUBLIC_KINDS",
    "PartitionScheme",
    "PrivateDataset",
    "PublicDataset",
    "PublicKind",
    "PublicPrivateSplit",
    "RECORDS_FILE",
    "available_datasets",
    "available_features",
    "available_partition_schemes",
    "available_public_kinds",
    "client_dataset",
    "dataset_task",
    "featurise_split",
    "load_dataset",
    "load_records",
    "partition_indices",
    "register_dataset",
    "save_records",
    "split_private_validation",
    "split_public_private",
    "split_public_validation",
    "subsample_private",
]
