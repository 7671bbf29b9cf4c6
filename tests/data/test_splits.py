"""Public/private splits: disjointness, stratification, the four public kinds, validation."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import get_args

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch.utils.data import TensorDataset

from fedprune.data import (
    DatasetBundle,
    PrivateDataset,
    PublicDataset,
    PublicKind,
    available_public_kinds,
    load_dataset,
    split_public_private,
    subsample_private,
)
from fedprune.data.splits import TRANSFORM_BRIGHTNESS, TRANSFORM_CONTRAST

BundleFactory = Callable[..., DatasetBundle]
Ids = Callable[[torch.Tensor], np.ndarray]


def _ids_of(dataset: PublicDataset | PrivateDataset, record_ids: Ids) -> np.ndarray:
    return record_ids(dataset.dataset.tensors[0])


def test_in_distribution_is_a_disjoint_stratified_holdout(
    make_bundle: BundleFactory, record_ids: Ids
) -> None:
    bundle = make_bundle()  # 190 records, class c has 10 + 2c
    split = split_public_private(bundle, public_fraction=0.2, public_kind="in-distribution", seed=0)
    pub, priv = _ids_of(split.public, record_ids), _ids_of(split.private, record_ids)
    assert len(pub) == round(0.2 * 190) and len(priv) == 190 - len(pub)
    assert not set(pub) & set(priv)
    assert sorted(np.concatenate([pub, priv]).tolist()) == list(range(190))
    # Each record keeps its own label.
    all_labels = bundle.train.tensors[1].numpy()
    assert (split.public.labels.numpy() == all_labels[pub]).all()
    assert (split.private.labels.numpy() == all_labels[priv]).all()
    # Stratified: every class contributes its share, up to rounding.
    counts = np.bincount(all_labels, minlength=10)
    public_counts = np.bincount(split.public.labels.numpy(), minlength=10)
    assert np.all(np.abs(public_counts - 0.2 * counts) < 1)
    assert split.public.kind == "in-distribution"
    assert "38 stratified held-out records of synthetic train" in split.public.description
    assert split.test is bundle.test
    assert (split.num_classes, split.input_shape) == (10, (1, 8, 8))


def test_split_is_deterministic_by_seed(make_bundle: BundleFactory, record_ids: Ids) -> None:
    bundle = make_bundle()

    def public_ids(seed: int) -> list[int]:
        split = split_public_private(
            bundle, public_fraction=0.3, public_kind="in-distribution", seed=seed
        )
        return _ids_of(split.public, record_ids).tolist()

    assert public_ids(1) == public_ids(1)
    assert public_ids(1) != public_ids(2)


def test_class_subset_keeps_only_public_classes_and_the_same_private_set(
    make_bundle: BundleFactory, record_ids: Ids
) -> None:
    bundle = make_bundle()
    base = split_public_private(bundle, public_fraction=0.3, public_kind="in-distribution", seed=3)
    default = split_public_private(bundle, public_fraction=0.3, public_kind="class-subset", seed=3)
    chosen = split_public_private(
        bundle, public_fraction=0.3, public_kind="class-subset", seed=3, public_classes=[7, 2]
    )
    assert set(default.public.labels.tolist()) == {0, 1, 2, 3, 4}  # first half of 10 classes
    assert set(chosen.public.labels.tolist()) == {2, 7}
    base_public = set(_ids_of(base.public, record_ids))
    for split in (default, chosen):
        assert split.public.kind == "class-subset"
        assert set(_ids_of(split.public, record_ids)) <= base_public
        torch.testing.assert_close(split.private.dataset.tensors, base.private.dataset.tensors)
    held_out_of_2_and_7 = int(torch.isin(base.public.labels, torch.tensor([2, 7])).sum())
    assert len(chosen.public) == held_out_of_2_and_7
    assert "classes [2, 7]" in chosen.public.description


def test_transformed_flips_horizontally_and_changes_contrast() -> None:
    digits = load_dataset("digits")
    base = split_public_private(digits, public_fraction=0.1, public_kind="in-distribution", seed=0)
    shifted = split_public_private(digits, public_fraction=0.1, public_kind="transformed", seed=0)
    x = base.public.dataset.tensors[0]
    expected = (TRANSFORM_CONTRAST * x.flip(-1) + TRANSFORM_BRIGHTNESS).clamp(0, 1)
    torch.testing.assert_close(shifted.public.dataset.tensors[0], expected)
    torch.testing.assert_close(shifted.public.labels, base.public.labels)
    torch.testing.assert_close(shifted.private.dataset.tensors, base.private.dataset.tensors)
    assert not torch.equal(shifted.public.dataset.tensors[0], x)


@pytest.mark.parametrize(
    ("private_shape", "other_shape"), [((1, 8, 8), (3, 16, 16)), ((3, 32, 32), (1, 8, 8))]
)
def test_other_dataset_is_converted_and_private_keeps_all_records(
    make_bundle: BundleFactory,
    private_shape: tuple[int, int, int],
    other_shape: tuple[int, int, int],
) -> None:
    bundle = make_bundle(shape=private_shape)
    other = make_bundle(name="other", counts=[4] * 50, shape=other_shape)  # 200 records, 50 classes
    split = split_public_private(
        bundle, public_fraction=0.25, public_kind="other-dataset", seed=0, other=other
    )
    x, y = split.public.dataset.tensors
    assert x.shape == (50, *private_shape) and x.dtype == torch.float32
    assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0
    assert int(y.max()) < bundle.num_classes
    # Constant images stay constant through the channel and size conversion.
    torch.testing.assert_close(x, x[:, :1, :1, :1].expand_as(x))
    torch.testing.assert_close(split.private.dataset.tensors, bundle.train.tensors)
    assert split.public.kind == "other-dataset"
    assert "of other train" in split.public.description


def test_other_dataset_rgb_to_grey_uses_luma() -> None:
    grey = load_dataset("digits")
    x = torch.zeros(20, 3, 8, 8)
    x[:, 1] = 1.0  # pure green
    other = type(grey)(
        name="green",
        train=TensorDataset(x, torch.arange(20) % 2),
        test=TensorDataset(x[:2], torch.zeros(2, dtype=torch.int64)),
        num_classes=2,
    )
    split = split_public_private(
        grey, public_fraction=0.5, public_kind="other-dataset", seed=0, other=other
    )
    torch.testing.assert_close(split.public.dataset.tensors[0], torch.full((10, 1, 8, 8), 0.587))


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.1, 1.5])
def test_fraction_outside_open_unit_interval_is_rejected(
    make_bundle: BundleFactory, fraction: float
) -> None:
    with pytest.raises(ValueError, match=rf"expected public_fraction in \(0, 1\), got {fraction}"):
        split_public_private(
            make_bundle(), public_fraction=fraction, public_kind="in-distribution", seed=0
        )


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"public_kind": "shuffled"}, r"unknown public_kind 'shuffled'; expected one of \["),
        (
            {"public_kind": "in-distribution", "public_classes": [1]},
            "public_classes is only used with public_kind='class-subset'",
        ),
        (
            {"public_kind": "transformed", "other": "BUNDLE"},
            "other is only used with public_kind='other-dataset'",
        ),
        ({"public_kind": "class-subset", "public_classes": []}, "at least one public class"),
        (
            {"public_kind": "class-subset", "public_classes": [3, 10, -1]},
            r"public_classes in \[0, 10\), got unknown classes \[10, -1\]",
        ),
        ({"public_kind": "class-subset", "public_classes": [3, 3]}, "distinct public_classes"),
        ({"public_kind": "other-dataset"}, "needs other"),
        (
            {"public_kind": "other-dataset", "other": "BUNDLE"},
            "needs a dataset different from 'synthetic', got other='synthetic'",
        ),
        (
            {"public_kind": "in-distribution", "public_fraction": 0.001},
            r"public set is empty: public_fraction=0.001 of 190 synthetic train records rounds",
        ),
        (
            {"public_kind": "in-distribution", "public_fraction": 0.999},
            "private set is empty",
        ),
    ],
)
def test_bad_arguments_raise_clear_errors(
    make_bundle: BundleFactory, kwargs: dict[str, object], message: str
) -> None:
    bundle = make_bundle()
    args: dict[str, object] = {"public_fraction": 0.2, "seed": 0, **kwargs}
    if args.get("other") == "BUNDLE":
        args["other"] = bundle
    with pytest.raises(ValueError, match=message):
        split_public_private(bundle, **args)  # type: ignore[arg-type]


def test_class_subset_with_no_held_out_record_of_those_classes_fails(
    make_bundle: BundleFactory,
) -> None:
    bundle = make_bundle(counts=[100, 99, 1])  # class 2's share of a 5% holdout rounds to 0
    with pytest.raises(ValueError, match=r"no held-out record has a class in \[2\]"):
        split_public_private(
            bundle, public_fraction=0.05, public_kind="class-subset", seed=0, public_classes=[2]
        )


def test_public_and_private_are_distinct_validated_types(make_bundle: BundleFactory) -> None:
    split = split_public_private(
        make_bundle(), public_fraction=0.2, public_kind="in-distribution", seed=0
    )
    assert not isinstance(split.public, PrivateDataset)
    assert not isinstance(split.private, PublicDataset)
    assert len(split.public) == len(split.public.dataset)
    with pytest.raises(ValueError, match="expected x float32 of shape"):
        PublicDataset(
            TensorDataset(torch.zeros(3, 8, 8), torch.zeros(3, dtype=torch.int64)),
            kind="in-distribution",
            description="flat",
        )
    with pytest.raises(ValueError, match="expected y int64"):
        PrivateDataset(TensorDataset(torch.zeros(3, 1, 8, 8), torch.zeros(3)), description="f")
    with pytest.raises(ValueError, match="unknown public kind 'private'"):
        PublicDataset(split.public.dataset, kind="private", description="x")  # type: ignore[arg-type]


def test_public_kind_registry_matches_the_literal() -> None:
    assert available_public_kinds() == sorted(get_args(PublicKind))


# The fixtures are stateless factories, so sharing them across examples is safe.
@settings(
    max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    counts=st.lists(st.integers(1, 30), min_size=2, max_size=8),
    fraction=st.floats(0.05, 0.95),
    seed=st.integers(0, 2**32 - 1),
)
def test_split_invariants_hold_for_random_sizes(
    make_bundle: BundleFactory, record_ids: Ids, counts: list[int], fraction: float, seed: int
) -> None:
    bundle = make_bundle(counts=counts)
    n = sum(counts)
    n_public = round(fraction * n)
    if n_public in (0, n):
        with pytest.raises(ValueError, match="set is empty"):
            split_public_private(
                bundle, public_fraction=fraction, public_kind="in-distribution", seed=seed
            )
        return
    split = split_public_private(
        bundle, public_fraction=fraction, public_kind="in-distribution", seed=seed
    )
    pub, priv = _ids_of(split.public, record_ids), _ids_of(split.private, record_ids)
    assert len(pub) == n_public
    assert sorted(np.concatenate([pub, priv]).tolist()) == list(range(n))
    public_counts = np.bincount(split.public.labels.numpy(), minlength=len(counts))
    assert np.all(np.abs(public_counts - fraction * np.array(counts)) < 1)


def test_subsample_private_keeps_a_fixed_data_independent_subset(
    make_bundle: BundleFactory, record_ids: Ids
) -> None:
    bundle = make_bundle()
    split = split_public_private(bundle, public_fraction=0.2, public_kind="in-distribution", seed=0)
    cut = subsample_private(split, records=40, seed=3)
    priv, kept = _ids_of(split.private, record_ids), _ids_of(cut.private, record_ids)
    assert len(kept) == 40 and len(set(kept)) == 40
    assert set(kept) <= set(priv)
    # Each kept record keeps its own label; public and test data are untouched.
    all_labels = bundle.train.tensors[1].numpy()
    assert (cut.private.labels.numpy() == all_labels[kept]).all()
    assert cut.public is split.public and cut.test is split.test
    assert "40 records (fixed subset, seed 3)" in cut.private.description
    # Deterministic in the seed, another seed another subset.
    again = subsample_private(split, records=40, seed=3)
    assert (_ids_of(again.private, record_ids) == kept).all()
    assert set(_ids_of(subsample_private(split, records=40, seed=4).private, record_ids)) != set(
        kept
    )
    # The kept positions never depend on the records: relabelled private data, same positions.
    x, y = split.private.dataset.tensors
    relabelled = dataclasses.replace(
        split, private=PrivateDataset(TensorDataset(x, (y + 1) % 10), description="relabelled")
    )
    positions = np.searchsorted(priv, kept)
    assert (
        _ids_of(subsample_private(relabelled, records=40, seed=3).private, record_ids)
        == priv[positions]
    ).all()


@pytest.mark.parametrize("records", [0, -1, 153])
def test_subsample_private_refuses_counts_outside_the_private_set(
    make_bundle: BundleFactory, records: int
) -> None:
    split = split_public_private(
        make_bundle(), public_fraction=0.2, public_kind="in-distribution", seed=0
    )
    assert len(split.private) == 152
    with pytest.raises(ValueError, match=r"data.private-records: expected a count in \[1, 152\]"):
        subsample_private(split, records=records, seed=0)
