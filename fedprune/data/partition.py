"""Federated partitions of the private set: which client holds which private records."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from fedprune.data.datasets import _take
from fedprune.data.splits import PrivateDataset
from fedprune.registry import Registry

__all__ = [
    "PARTITION_SCHEMES",
    "PartitionScheme",
    "available_partition_schemes",
    "client_dataset",
    "partition_indices",
]

logger = logging.getLogger(__name__)

PartitionScheme = Literal["iid", "dirichlet", "shards"]

# Dirichlet draws are repeated (from the same seeded generator) until every client has at least
# ``min_size`` records; this bounds the retries before giving up with an explanation.
MAX_DIRICHLET_ATTEMPTS = 100


@dataclass(frozen=True)
class _Request:
    labels: np.ndarray
    num_clients: int
    rng: np.random.Generator
    alpha: float
    shards_per_client: int
    min_size: int


_Scheme = Callable[[_Request], list[np.ndarray]]
PARTITION_SCHEMES: Registry[_Scheme] = Registry("partition scheme")
"""Partition schemes by name (one per :data:`PartitionScheme`)."""


def _register(name: PartitionScheme) -> Callable[[_Scheme], _Scheme]:
    return PARTITION_SCHEMES.decorator(name)


def _sizes(parts: list[np.ndarray]) -> list[int]:
    return [len(p) for p in parts]


@_register("iid")
def _iid(req: _Request) -> list[np.ndarray]:
    """Shuffle, then cut into ``num_clients`` parts whose sizes differ by at most one."""
    return np.array_split(req.rng.permutation(len(req.labels)), req.num_clients)


@_register("dirichlet")
def _dirichlet(req: _Request) -> list[np.ndarray]:
    """Label skew: class ``c``'s records go to clients in proportions ``p_c ~ Dir(alpha 1_K)``.

    Redrawn (up to :data:`MAX_DIRICHLET_ATTEMPTS` times) until every client has ``min_size``.
    """
    if not req.alpha > 0:
        raise ValueError(f"expected alpha > 0, got {req.alpha}")
    k = req.num_clients
    by_class = [np.flatnonzero(req.labels == c) for c in np.unique(req.labels)]
    smallest = 0
    for _ in range(MAX_DIRICHLET_ATTEMPTS):
        parts: list[list[np.ndarray]] = [[] for _ in range(k)]
        for idx in by_class:
            p = req.rng.dirichlet(np.full(k, req.alpha))
            cuts = (np.cumsum(p)[:-1] * len(idx)).astype(np.int64)
            for client, chunk in enumerate(np.split(req.rng.permutation(idx), cuts)):
                parts[client].append(chunk)
        clients = [np.concatenate(chunks) for chunks in parts]
        smallest = min(_sizes(clients))
        if smallest >= req.min_size:
            return clients
    raise ValueError(
        f"dirichlet partition failed: in {MAX_DIRICHLET_ATTEMPTS} draws some client always had "
        f"fewer than min_size={req.min_size} records (last draw's smallest: {smallest}) with "
        f"{len(req.labels)} records, {len(by_class)} classes, num_clients={k}, alpha={req.alpha}; "
        f"use fewer clients, a larger alpha or a smaller min_size"
    )


@_register("shards")
def _shards(req: _Request) -> list[np.ndarray]:
    """Sort by label, cut into ``num_clients * shards_per_client`` shards, deal them at random.

    Records of one label are shuffled before sorting, so shards differ between seeds.
    """
    s = req.shards_per_client
    if s < 1:
        raise ValueError(f"expected shards_per_client >= 1, got {s}")
    num_shards = req.num_clients * s
    if num_shards > len(req.labels):
        raise ValueError(
            f"shards partition needs at least one record per shard: num_clients * "
            f"shards_per_client = {req.num_clients} * {s} = {num_shards} shards > "
            f"{len(req.labels)} records"
        )
    shuffled = req.rng.permutation(len(req.labels))
    by_label = shuffled[np.argsort(req.labels[shuffled], kind="stable")]
    shards = np.array_split(by_label, num_shards)
    order = req.rng.permutation(num_shards)
    return [
        np.concatenate([shards[j] for j in order[i * s : (i + 1) * s]])
        for i in range(req.num_clients)
    ]


def available_partition_schemes() -> list[str]:
    """Names accepted as ``scheme`` by :func:`partition_indices`."""
    return PARTITION_SCHEMES.names()


def partition_indices(
    labels: np.ndarray | torch.Tensor,
    *,
    num_clients: int,
    scheme: PartitionScheme,
    seed: int,
    alpha: float = 0.5,
    shards_per_client: int = 2,
    min_size: int = 1,
) -> list[np.ndarray]:
    """Assign every record to exactly one of ``num_clients`` clients.

    Parameters
    ----------
    labels:
        Integer class labels, shape ``(N,)`` (e.g. ``PrivateDataset.labels``).
    num_clients:
        In ``[1, N]``.
    scheme:
        ``"iid"``: a uniform shuffle cut into near-equal parts (sizes differ by at most one).
        ``"dirichlet"``: label skew; for each class, the share of its records each client gets is
        drawn from ``Dirichlet(alpha, ..., alpha)`` (smaller ``alpha``: more skew); redrawn up to
        :data:`MAX_DIRICHLET_ATTEMPTS` times until every client has ``min_size`` records.
        ``"shards"`` (McMahan et al. 2017): records sorted by label are cut into
        ``num_clients * shards_per_client`` near-equal shards and each client gets
        ``shards_per_client`` of them at random (so about that many labels per client).
    seed:
        Seeds all randomness; the same arguments give the same partition.
    alpha:
        Dirichlet concentration, ``> 0`` (``dirichlet`` only).
    shards_per_client:
        ``>= 1`` (``shards`` only).
    min_size:
        ``>= 0``: the fewest records any client may get.

    Returns
    -------
    list of numpy.ndarray
        ``num_clients`` sorted int64 index arrays into ``labels``; together they hold every index
        in ``range(N)`` exactly once.

    Raises
    ------
    ValueError
        Unknown scheme (the message lists the known ones); ``labels`` not 1-D integers;
        ``num_clients`` outside ``[1, N]``; ``alpha <= 0``; ``shards_per_client < 1`` or more shards
        than records; ``min_size`` not met (for ``dirichlet``: after all redraws).

    Privacy
    -------
    The partition depends on the private labels; it decides which client holds a record and is
    not itself protected by DP (as in any federated data set-up, it models the data's location).
    """
    assign = PARTITION_SCHEMES.get(scheme)
    y = labels.detach().cpu().numpy() if isinstance(labels, torch.Tensor) else np.asarray(labels)
    if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"expected 1-D integer labels, got {y.dtype} of shape {y.shape}")
    if not 1 <= num_clients <= len(y):
        raise ValueError(
            f"expected num_clients in [1, {len(y)}] (number of records), got {num_clients}"
        )
    if min_size < 0:
        raise ValueError(f"expected min_size >= 0, got {min_size}")
    if min_size * num_clients > len(y):
        raise ValueError(
            f"cannot give each of {num_clients} clients min_size={min_size} records: "
            f"only {len(y)} records"
        )
    request = _Request(
        labels=y,
        num_clients=num_clients,
        rng=np.random.default_rng(seed),
        alpha=alpha,
        shards_per_client=shards_per_client,
        min_size=min_size,
    )
    parts = [np.sort(p).astype(np.int64) for p in assign(request)]
    sizes = _sizes(parts)
    if min(sizes) < min_size:
        raise ValueError(
            f"{scheme} partition gives a client {min(sizes)} records < min_size={min_size} "
            f"({len(y)} records over {num_clients} clients); "
            f"use fewer clients or a smaller min_size"
        )
    logger.debug("%s partition of %d records: client sizes %s", scheme, len(y), sizes)
    return parts


def client_dataset(private: PrivateDataset, indices: np.ndarray | torch.Tensor) -> PrivateDataset:
    """The records ``indices`` of ``private`` as a new :class:`PrivateDataset` (tensors copied).

    Parameters
    ----------
    private:
        The private set the indices refer to.
    indices:
        1-D, non-empty, distinct integer indices in ``[0, len(private))``, e.g. one entry of
        :func:`partition_indices` applied to ``private.labels``.

    Raises
    ------
    ValueError
        Indices not 1-D integers, empty, repeated or out of range.
    """
    idx = (
        indices.detach().cpu().numpy() if isinstance(indices, torch.Tensor) else np.asarray(indices)
    )
    if idx.ndim != 1 or not np.issubdtype(idx.dtype, np.integer):
        raise ValueError(f"expected 1-D integer indices, got {idx.dtype} of shape {idx.shape}")
    if len(idx) == 0:
        raise ValueError("expected at least one index, got none")
    if idx.min() < 0 or idx.max() >= len(private):
        raise ValueError(
            f"expected indices in [0, {len(private)}), got range [{idx.min()}, {idx.max()}]"
        )
    if len(np.unique(idx)) != len(idx):
        raise ValueError("expected distinct indices, got repeated ones")
    return PrivateDataset(
        _take(private.dataset, idx), description=f"{len(idx)} of {private.description}"
    )
