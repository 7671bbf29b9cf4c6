"""Layer lookup by name, reading a layer's input/output and replacing its output."""

import pytest
import torch

from fedprune.activation.layers import (
    affine_layer_names,
    capture_layer_io,
    default_layer_name,
    get_affine_layer,
    replace_layer_output,
)
from fedprune.models import create_model


def test_layer_names_of_registry_models() -> None:
    mlp = create_model("mlp", input_shape=(1, 8, 8), num_classes=10)
    cnn = create_model("cnn", input_shape=(1, 8, 8), num_classes=10)
    assert affine_layer_names(mlp) == ["1", "3", "5"]
    assert default_layer_name(mlp) == "1"
    assert affine_layer_names(cnn) == ["features.0", "features.3", "head.1", "head.3"]
    assert default_layer_name(cnn) == "features.0"


def test_unknown_layer_lists_valid_names() -> None:
    mlp = create_model("mlp", input_shape=(1, 8, 8), num_classes=10)
    with pytest.raises(ValueError, match=r"unknown layer '2'; expected one of \['1', '3', '5'\]"):
        get_affine_layer(mlp, "2")  # a ReLU, not an affine layer


def test_capture_and_replace_layer_output() -> None:
    torch.manual_seed(0)
    mlp = create_model("mlp", input_shape=(1, 8, 8), num_classes=10)
    x = torch.rand(4, 1, 8, 8)
    u, h = capture_layer_io(mlp, "3", x)
    layer = get_affine_layer(mlp, "3")
    assert u.shape == (4, 128) and h.shape == (4, 128)
    assert torch.allclose(h, layer(u))
    with torch.no_grad():
        clean = mlp(x)
        with replace_layer_output(mlp, "3", torch.zeros_like):
            zeroed = mlp(x)
        after = mlp(x)
        # Zeroed layer-3 output: the logits are the head applied to ReLU(0) = 0.
        assert torch.allclose(zeroed, get_affine_layer(mlp, "5")(torch.zeros(4, 128)))
    assert not torch.allclose(zeroed, clean)
    assert torch.equal(after, clean)  # the hook is gone
