"""Model registry: every model is Opacus-valid as built, has the documented shapes and sizes,
``auto`` picks by input shape, and bad names/shapes/registrations fail naming the problem."""

from __future__ import annotations

import pytest
import torch
from opacus.validators import ModuleValidator
from torch import nn

from fedprune.models import available_models, create_model
from fedprune.models.registry import register_model

DIGITS = (1, 8, 8)
MNIST = (1, 28, 28)
CIFAR = (3, 32, 32)


def _size(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("name", available_models())
@pytest.mark.parametrize("shape", [DIGITS, MNIST, CIFAR])
def test_every_model_is_opacus_valid_and_maps_to_logits(
    name: str, shape: tuple[int, int, int]
) -> None:
    torch.manual_seed(0)
    model = create_model(name, input_shape=shape, num_classes=7)
    assert ModuleValidator.validate(model, strict=False) == []
    logits = model(torch.rand(5, *shape))
    assert logits.shape == (5, 7)
    assert torch.isfinite(logits).all()


@pytest.mark.parametrize(
    ("name", "size"), [("mlp", 26_122), ("mlp-wide", 1_126_410), ("cnn", 151_306)]
)
def test_documented_sizes_on_digits(name: str, size: int) -> None:
    assert _size(create_model(name, input_shape=DIGITS, num_classes=10)) == size


def test_initialisation_follows_the_torch_seed() -> None:
    def weights(seed: int) -> list[torch.Tensor]:
        torch.manual_seed(seed)
        return list(create_model("mlp", input_shape=DIGITS, num_classes=10).parameters())

    same = zip(weights(3), weights(3), strict=True)
    assert all(torch.equal(a, b) for a, b in same)
    assert not torch.equal(weights(3)[0], weights(4)[0])


@pytest.mark.parametrize(
    ("shape", "expected"),
    [
        (DIGITS, "mlp"),
        ((1, 16, 16), "mlp"),
        ((1, 17, 16), "cnn"),
        (MNIST, "cnn"),
        (CIFAR, "resnet"),
    ],
)
def test_auto_picks_by_input_shape(shape: tuple[int, int, int], expected: str) -> None:
    torch.manual_seed(0)
    auto = create_model("auto", input_shape=shape, num_classes=10)
    torch.manual_seed(0)
    named = create_model(expected, input_shape=shape, num_classes=10)
    assert type(auto) is type(named) and _size(auto) == _size(named)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"name": "vgg", "input_shape": DIGITS, "num_classes": 10}, "unknown model 'vgg'"),
        ({"name": "mlp", "input_shape": (8, 8), "num_classes": 10}, "input_shape"),
        ({"name": "mlp", "input_shape": (1, 0, 8), "num_classes": 10}, "input_shape"),
        ({"name": "mlp", "input_shape": DIGITS, "num_classes": 1}, "num_classes >= 2"),
    ],
)
def test_bad_requests_name_the_problem(kwargs: dict, message: str) -> None:
    name = kwargs.pop("name")
    with pytest.raises(ValueError, match=message):
        create_model(name, **kwargs)


def test_registering_a_taken_name_fails() -> None:
    with pytest.raises(ValueError, match="'mlp' is already registered"):
        register_model("mlp")(lambda shape, k: nn.Linear(1, k))
    assert "mlp" in available_models()
