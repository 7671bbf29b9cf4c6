"""RunConfig: flat kebab keys parse once into frozen typed sections; bad keys and values fail."""

import json
import math

import pytest

from fedprune.config import RunConfig
from fedprune.io import to_json_text


def test_flat_round_trip_is_exact() -> None:
    config = RunConfig().replace(**{"mask.density": 0.05, "privacy.max-epsilon": 3.0, "seed": 7})
    assert RunConfig.from_flat(config.to_flat()) == config
    assert config.mask.density == 0.05 and config.privacy.max_epsilon == 3.0 and config.seed == 7


def test_unknown_key_is_named_with_the_known_ones() -> None:
    with pytest.raises(ValueError, match=r"unknown config keys \['mask.densty'\]; known keys"):
        RunConfig.from_flat({"mask.densty": 0.1})


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("mask.density", 1.5, r"config mask.density: expected a value in \(0, 1\], got 1.5"),
        ("mask.mode", "prune", r"config mask.mode: expected one of \['freeze', 'select'\]"),
        ("privacy.delta", 0.0, r"config privacy.delta: expected a value in \(0, 1\)"),
        ("federated.num-rounds", 2.5, "config federated.num-rounds: expected an integer"),
        ("secagg.enabled", "yes", "config secagg.enabled: expected true or false"),
        ("optim.lr", "fast", "config optim.lr: expected a number"),
        ("data.public-kind", "other-dataset", "config data.other-dataset: expected a dataset"),
        ("mask.density", 0.0, r"config mask.density: expected a value in \(0, 1\], got 0.0"),
        ("mask.density", -0.1, r"config mask.density: expected a value in \(0, 1\]"),
        ("privacy.target-epsilon", 0.0, "config privacy.target-epsilon: expected > 0, got 0.0"),
        ("privacy.target-epsilon", -1.0, "config privacy.target-epsilon: expected > 0"),
        ("privacy.target-epsilon", "inf", "config privacy.target-epsilon: expected a number"),
        ("privacy.delta", 1.0, r"config privacy.delta: expected a value in \(0, 1\), got 1.0"),
        ("privacy.delta", -1e-5, r"config privacy.delta: expected a value in \(0, 1\)"),
        ("privacy.max-epsilon", 0.0, "config privacy.max-epsilon: expected > 0"),
        ("optim.lr", float("inf"), "config optim.lr: expected a finite number, got inf"),
        ("optim.lr", None, "config optim.lr: expected a number, got None"),
        ("mask.strategy", "largest", "config mask.strategy: expected one of"),
        ("model", "resnet9000", "config model: expected one of"),
        ("data.dataset", "imagenet", "config data.dataset: expected one of"),
        ("federated.num-rounds", 0, "config federated.num-rounds: expected >= 1, got 0"),
        ("federated.num-rounds", -3, "config federated.num-rounds: expected >= 1"),
        ("federated.num-clients", 0, "config federated.num-clients: expected >= 1, got 0"),
        ("data.private-records", -1, "config data.private-records: expected a count >= 0"),
    ],
)
def test_bad_values_name_the_key(key: str, value: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        RunConfig.from_flat({key: value})


def test_integral_floats_and_inf_strings_are_accepted() -> None:
    config = RunConfig.from_flat({"federated.num-rounds": 3.0, "privacy.max-epsilon": "inf"})
    assert config.federated.num_rounds == 3
    assert math.isinf(config.privacy.max_epsilon)


def test_public_classes_parse_and_reject_garbage() -> None:
    assert RunConfig().replace(**{"data.public-classes": "0, 2"}).data.public_class_list == [0, 2]
    assert RunConfig().data.public_class_list is None
    with pytest.raises(ValueError, match=r"data\.public-classes"):
        _ = RunConfig().replace(**{"data.public-classes": "a,b"}).data.public_class_list


def test_a_stored_config_with_an_unbounded_budget_parses_back() -> None:
    # summary.json stores inf as null (strict JSON); reading it back must give inf again
    config = RunConfig().replace(**{"mask.density": 0.05})
    assert config.privacy.max_epsilon == math.inf
    stored = json.loads(to_json_text(config.to_flat()))
    assert stored["privacy.max-epsilon"] is None
    assert RunConfig.from_flat(stored) == config
