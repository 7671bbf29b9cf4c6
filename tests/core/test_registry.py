"""``Registry`` itself, and the five registries built on it (models, datasets, public kinds,
partition schemes, mask strategies): unknown names fail listing the known ones."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest

import fedprune.data as data
import fedprune.masks as masks
import fedprune.models as models
from fedprune.registry import Registry


def test_register_get_names_contains() -> None:
    colours: Registry[int] = Registry("colour")
    assert colours.register("red", 1) == 1

    @colours.decorator("blue")
    def blue() -> int:
        return 2

    assert colours.get("red") == 1 and colours.get("blue") is blue
    assert colours.names() == ["blue", "red"] == list(colours)
    assert "red" in colours and "green" not in colours and len(colours) == 2


def test_duplicate_name_is_refused_and_keeps_the_first_entry() -> None:
    colours: Registry[int] = Registry("colour")
    colours.register("red", 1)
    with pytest.raises(ValueError, match="colour 'red' is already registered"):
        colours.register("red", 2)
    with pytest.raises(ValueError, match="colour 'red' is already registered"):
        colours.decorator("red")(3)
    assert colours.get("red") == 1


def test_unknown_name_lists_the_known_ones() -> None:
    colours: Registry[int] = Registry("colour")
    colours.register("red", 1)
    colours.register("blue", 2)
    expected = "unknown colour 'green'; expected one of ['blue', 'red']"
    with pytest.raises(ValueError, match=re.escape(expected)):
        colours.get("green")
    with pytest.raises(ValueError, match=re.escape(expected)):
        colours.check("green")


def test_check_accepts_extra_names_and_lists_them() -> None:
    colours: Registry[int] = Registry("colour")
    colours.register("red", 1)
    assert colours.check("red") == "red"
    assert colours.check("auto", extra=("auto",)) == "auto"
    assert "auto" not in colours
    with pytest.raises(ValueError, match=re.escape("expected one of ['auto', 'red']")):
        colours.check("green", extra=("auto",))


REGISTRIES: dict[str, tuple[Registry[Any], list[str], Callable[[str], object]]] = {
    "model": (
        models.MODELS,
        ["cnn", "mlp", "mlp-wide", "resnet"],
        lambda name: models.create_model(name, input_shape=(1, 8, 8), num_classes=10),
    ),
    "dataset": (
        data.DATASETS,
        ["cifar10", "cifar100", "digits", "fashion-mnist", "mnist"],
        lambda name: data.load_dataset(name),
    ),
    "public_kind": (
        data.PUBLIC_KINDS,
        ["class-subset", "in-distribution", "other-dataset", "transformed"],
        lambda name: data.split_public_private(
            data.load_dataset("digits"),
            public_fraction=0.1,
            public_kind=name,
            seed=0,  # type: ignore[arg-type]
        ),
    ),
    "partition scheme": (
        data.PARTITION_SCHEMES,
        ["dirichlet", "iid", "shards"],
        lambda name: data.partition_indices(
            [0, 1, 0, 1],
            num_clients=2,
            scheme=name,
            seed=0,  # type: ignore[arg-type]
        ),
    ),
    "mask strategy": (
        masks.MASK_STRATEGIES,
        ["gradient", "magnitude", "none", "random", "snip"],
        masks.create_mask_strategy,
    ),
}


@pytest.mark.parametrize("kind", sorted(REGISTRIES))
def test_each_registry_rejects_an_unknown_name_listing_known_ones(kind: str) -> None:
    registry, known, create = REGISTRIES[kind]
    assert isinstance(registry, Registry) and registry.kind == kind
    assert set(known) <= set(registry.names())  # other tests may register more (e.g. "-val")
    for lookup in (registry.get, create):
        with pytest.raises(ValueError, match=f"unknown {kind} 'nope'; expected one of ") as info:
            lookup("nope")
        assert all(repr(name) in str(info.value) for name in known)


def test_public_functions_are_views_of_the_registries() -> None:
    assert models.available_models() == models.MODELS.names()
    assert data.available_datasets() == data.DATASETS.names()
    assert data.available_public_kinds() == data.PUBLIC_KINDS.names()
    assert data.available_partition_schemes() == data.PARTITION_SCHEMES.names()
    assert masks.available_mask_strategies() == masks.MASK_STRATEGIES.names()
