"""Federated partitions: every record in exactly one client, determinism, skew, validation."""

from __future__ import annotations

from typing import get_args

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.utils.data import TensorDataset

from fedprune.data import (
    PartitionScheme,
    PrivateDataset,
    available_partition_schemes,
    client_dataset,
    partition_indices,
)

SCHEMES: tuple[PartitionScheme, ...] = ("iid", "dirichlet", "shards")


def _labels(num_classes: int = 10, per_class: int = 50, seed: int = 0) -> np.ndarray:
    y = np.repeat(np.arange(num_classes), per_class)
    return y[np.random.default_rng(seed).permutation(len(y))]


def _assert_exact_cover(parts: list[np.ndarray], n: int, num_clients: int) -> None:
    assert len(parts) == num_clients
    for part in parts:
        assert part.dtype == np.int64 and part.ndim == 1
        assert (np.diff(part) > 0).all()  # sorted, no repeats
    assert np.array_equal(np.sort(np.concatenate(parts)), np.arange(n))


def _label_skew(labels: np.ndarray, parts: list[np.ndarray]) -> float:
    """Mean total-variation distance between each client's label distribution and the global one."""
    k = int(labels.max()) + 1
    overall = np.bincount(labels, minlength=k) / len(labels)
    return float(
        np.mean(
            [
                0.5 * np.abs(np.bincount(labels[p], minlength=k) / len(p) - overall).sum()
                for p in parts
            ]
        )
    )


@pytest.mark.parametrize("scheme", SCHEMES)
def test_every_record_goes_to_exactly_one_client(scheme: PartitionScheme) -> None:
    labels = _labels()
    parts = partition_indices(labels, num_clients=7, scheme=scheme, seed=0)
    _assert_exact_cover(parts, len(labels), 7)
    assert min(len(p) for p in parts) >= 1


@pytest.mark.parametrize("scheme", SCHEMES)
def test_partition_is_deterministic_by_seed(scheme: PartitionScheme) -> None:
    labels = _labels()

    def run(seed: int) -> list[list[int]]:
        return [
            p.tolist() for p in partition_indices(labels, num_clients=5, scheme=scheme, seed=seed)
        ]

    assert run(3) == run(3)
    assert run(3) != run(4)


@pytest.mark.parametrize("scheme", SCHEMES)
def test_torch_and_numpy_labels_give_the_same_partition(scheme: PartitionScheme) -> None:
    labels = _labels()
    from_numpy = partition_indices(labels, num_clients=4, scheme=scheme, seed=1)
    from_torch = partition_indices(torch.from_numpy(labels), num_clients=4, scheme=scheme, seed=1)
    assert [p.tolist() for p in from_numpy] == [p.tolist() for p in from_torch]


def test_iid_sizes_differ_by_at_most_one_and_labels_mix() -> None:
    labels = _labels()
    parts = partition_indices(labels, num_clients=7, scheme="iid", seed=0)
    sizes = [len(p) for p in parts]
    assert max(sizes) - min(sizes) <= 1
    assert _label_skew(labels, parts) < 0.2


def test_dirichlet_skew_grows_as_alpha_shrinks() -> None:
    labels = _labels(per_class=100)
    skew = {
        alpha: np.mean(
            [
                _label_skew(
                    labels,
                    partition_indices(
                        labels, num_clients=10, scheme="dirichlet", seed=seed, alpha=alpha
                    ),
                )
                for seed in range(5)
            ]
        )
        for alpha in (100.0, 1.0, 0.1)
    }
    assert skew[100.0] < skew[1.0] < skew[0.1]
    assert skew[100.0] < 0.1 and skew[0.1] > 0.5


def test_dirichlet_meets_min_size() -> None:
    labels = _labels()
    parts = partition_indices(
        labels, num_clients=10, scheme="dirichlet", seed=0, alpha=0.3, min_size=20
    )
    assert min(len(p) for p in parts) >= 20


def test_dirichlet_gives_up_with_an_explanation() -> None:
    with pytest.raises(ValueError, match="use fewer clients, a larger alpha or a smaller min_size"):
        partition_indices(_labels(), num_clients=300, scheme="dirichlet", seed=0, alpha=0.01)


def test_shards_give_each_client_at_most_shards_per_client_labels() -> None:
    labels = _labels(num_classes=10, per_class=20)  # 20 shards of 10 records: one label per shard
    parts = partition_indices(labels, num_clients=10, scheme="shards", seed=0, shards_per_client=2)
    assert all(len(p) == 20 for p in parts)
    assert all(len(np.unique(labels[p])) <= 2 for p in parts)
    assert _label_skew(labels, parts) > 0.7


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {"scheme": "pathological"},
            r"unknown partition scheme 'pathological'; expected one of \[",
        ),
        ({"num_clients": 0}, r"expected num_clients in \[1, 500\] \(number of records\), got 0"),
        (
            {"num_clients": 501},
            r"expected num_clients in \[1, 500\] \(number of records\), got 501",
        ),
        ({"scheme": "dirichlet", "alpha": 0.0}, "expected alpha > 0, got 0.0"),
        ({"scheme": "dirichlet", "alpha": -1.0}, "expected alpha > 0, got -1.0"),
        ({"scheme": "shards", "shards_per_client": 0}, "expected shards_per_client >= 1, got 0"),
        (
            {"scheme": "shards", "num_clients": 300, "shards_per_client": 2},
            r"300 \* 2 = 600 shards > 500 records",
        ),
        ({"min_size": -1}, "expected min_size >= 0, got -1"),
        ({"num_clients": 10, "min_size": 51}, "cannot give each of 10 clients min_size=51"),
    ],
)
def test_impossible_requests_raise_clear_errors(kwargs: dict[str, object], message: str) -> None:
    args: dict[str, object] = {"num_clients": 5, "scheme": "iid", "seed": 0, **kwargs}
    with pytest.raises(ValueError, match=message):
        partition_indices(_labels(), **args)  # type: ignore[arg-type]


def test_shards_enforce_min_size() -> None:
    # 11 records in 8 shards of sizes 2,2,2,1,1,1,1,1: a client gets 4 to 7 records by the deal.
    labels = np.arange(11) % 3
    failures = 0
    for seed in range(40):
        try:
            parts = partition_indices(
                labels, num_clients=2, scheme="shards", seed=seed, shards_per_client=4, min_size=5
            )
        except ValueError as err:
            assert "shards partition gives a client 4 records < min_size=5" in str(err)
            failures += 1
        else:
            assert min(len(p) for p in parts) >= 5
    assert 0 < failures < 40


@pytest.mark.parametrize("labels", [np.zeros((4, 2), dtype=np.int64), np.zeros(8)])
def test_labels_must_be_1d_integers(labels: np.ndarray) -> None:
    with pytest.raises(ValueError, match="expected 1-D integer labels"):
        partition_indices(labels, num_clients=2, scheme="iid", seed=0)


def test_scheme_registry_matches_the_literal() -> None:
    assert available_partition_schemes() == sorted(get_args(PartitionScheme))


@settings(max_examples=200, deadline=None)
@given(
    n=st.integers(1, 300),
    num_classes=st.integers(1, 10),
    data=st.data(),
    scheme=st.sampled_from(SCHEMES),
    seed=st.integers(0, 2**32 - 1),
    alpha=st.floats(0.05, 10.0),
)
def test_partition_invariants_hold_for_random_sizes(
    n: int,
    num_classes: int,
    data: st.DataObject,
    scheme: PartitionScheme,
    seed: int,
    alpha: float,
) -> None:
    labels = np.random.default_rng(seed).integers(0, num_classes, size=n)
    num_clients = data.draw(st.integers(1, min(n, 20)), label="num_clients")
    shards_per_client = data.draw(st.integers(1, max(1, n // num_clients)), label="shards")

    # min_size=0 so dirichlet never has to give up; iid and shards give everyone >= 1 anyway.
    def run() -> list[np.ndarray]:
        return partition_indices(
            labels,
            num_clients=num_clients,
            scheme=scheme,
            seed=seed,
            alpha=alpha,
            shards_per_client=shards_per_client,
            min_size=0,
        )

    parts = run()
    _assert_exact_cover(parts, n, num_clients)
    if scheme != "dirichlet":
        assert min(len(p) for p in parts) >= 1
    assert [p.tolist() for p in parts] == [p.tolist() for p in run()]


def _private(n: int = 30) -> PrivateDataset:
    x = torch.arange(n, dtype=torch.float32).reshape(n, 1, 1, 1).expand(n, 1, 4, 4) / n
    return PrivateDataset(TensorDataset(x.contiguous(), torch.arange(n) % 3), description="toy")


def test_client_dataset_holds_exactly_the_given_records() -> None:
    private = _private()
    parts = partition_indices(private.labels, num_clients=3, scheme="dirichlet", seed=0)
    clients = [client_dataset(private, p) for p in parts]
    for part, client in zip(parts, clients, strict=True):
        assert isinstance(client, PrivateDataset)
        assert len(client) == len(part)
        torch.testing.assert_close(client.dataset.tensors[0], private.dataset.tensors[0][part])
        torch.testing.assert_close(client.labels, private.labels[part])
        assert client.description == f"{len(part)} of toy"
    assert sum(len(c) for c in clients) == len(private)
    torch.testing.assert_close(
        client_dataset(private, torch.tensor([4, 2])).labels, private.labels[[4, 2]]
    )


@pytest.mark.parametrize(
    ("indices", "message"),
    [
        (np.array([], dtype=np.int64), "at least one index"),
        (np.array([0, 30]), r"expected indices in \[0, 30\), got range \[0, 30\]"),
        (np.array([-1, 2]), r"got range \[-1, 2\]"),
        (np.array([1, 1]), "distinct indices"),
        (np.array([[1, 2]]), "1-D integer indices"),
        (np.array([0.0, 1.0]), "1-D integer indices"),
    ],
)
def test_client_dataset_rejects_bad_indices(indices: np.ndarray, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        client_dataset(_private(), indices)
