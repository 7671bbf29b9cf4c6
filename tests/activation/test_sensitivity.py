"""Sensitivity bounds of an affine layer over a box of inputs, and interval propagation."""

import itertools
import math

import pytest
import torch
from torch import nn

from fedprune.activation.sensitivity import (
    InputBox,
    affine_jacobian,
    affine_sensitivity,
    layer_input_box,
)
from fedprune.models import create_model


def test_affine_sensitivity_hand_case() -> None:
    a = torch.tensor([[1.0, 2.0], [0.0, 3.0]])
    s = affine_sensitivity(a, torch.ones(2))
    assert s.l1_whole_input == pytest.approx(6.0)  # |1| + |2| + |0| + |3|
    assert s.l1_one_coordinate == pytest.approx(5.0)  # column 2: |2| + |3|
    assert s.l2_one_coordinate == pytest.approx(math.sqrt(13.0))  # column 2: sqrt(4 + 9)
    assert s.l2_per_coordinate_bound == pytest.approx(math.sqrt(18.0))  # rows sum to 3 and 3
    # A^T A = [[1, 2], [2, 13]]: largest eigenvalue (14 + sqrt(160)) / 2.
    op = math.sqrt((14 + math.sqrt(160)) / 2)
    assert s.l2_operator_bound == pytest.approx(op * math.sqrt(2))
    assert s.l2_whole_input == pytest.approx(math.sqrt(18.0))  # the smaller bound


def test_affine_sensitivity_uses_operator_bound_when_smaller_and_it_is_tight() -> None:
    a = torch.tensor([[1.0, 1.0], [1.0, -1.0]])
    s = affine_sensitivity(a, torch.ones(2))
    assert s.l2_per_coordinate_bound == pytest.approx(math.sqrt(8.0))
    assert s.l2_whole_input == pytest.approx(2.0)  # ||A||_op = sqrt 2, times sqrt d = sqrt 2
    corners = [torch.tensor(c) for c in itertools.product([0.0, 1.0], repeat=2)]
    worst = max(float((a @ (u - v)).norm()) for u in corners for v in corners)
    assert worst == pytest.approx(2.0)  # attained: the bound is tight here


def test_affine_sensitivity_scales_columns_by_box_width() -> None:
    a = torch.tensor([[1.0, 2.0], [0.0, 3.0]])
    s = affine_sensitivity(a, torch.tensor([2.0, 0.5]))  # A diag(w) = [[2, 1], [0, 1.5]]
    assert s.l1_whole_input == pytest.approx(4.5)
    assert s.l1_one_coordinate == pytest.approx(2.5)  # column 2: 1 + 1.5 (column 1: 2)
    assert s.l2_one_coordinate == pytest.approx(2.0)  # column 1: 2 (column 2: sqrt 3.25)


def test_affine_sensitivity_bounds_hold_on_random_pairs() -> None:
    g = torch.Generator().manual_seed(0)
    a = torch.randn(5, 4, generator=g)
    low = torch.rand(4, generator=g) - 1
    high = low + 2 * torch.rand(4, generator=g)
    s = affine_sensitivity(a, high - low)
    u = low + (high - low) * torch.rand(5000, 4, generator=g)
    v = low + (high - low) * torch.rand(5000, 4, generator=g)
    diff = (u - v) @ a.T
    assert float(diff.abs().sum(dim=1).max()) <= s.l1_whole_input
    assert float(diff.norm(dim=1).max()) <= s.l2_whole_input
    one = torch.zeros_like(u)
    one[:, 2] = (u - v)[:, 2]  # neighbours differing in coordinate 2 only
    assert float((one @ a.T).abs().sum(dim=1).max()) <= s.l1_one_coordinate
    assert float((one @ a.T).norm(dim=1).max()) <= s.l2_one_coordinate


def test_affine_sensitivity_rejects_bad_shapes() -> None:
    with pytest.raises(ValueError, match="expected jacobian"):
        affine_sensitivity(torch.ones(2, 3), torch.ones(2))
    with pytest.raises(ValueError, match="width >= 0"):
        affine_sensitivity(torch.ones(2, 2), torch.tensor([1.0, -1.0]))


def test_affine_jacobian_reproduces_linear_and_conv() -> None:
    torch.manual_seed(0)
    linear = nn.Linear(4, 3)
    assert torch.equal(affine_jacobian(linear, (4,)), linear.weight)
    conv = nn.Conv2d(2, 3, 3, padding=1, stride=2)
    u = torch.rand(2, 5, 5)
    a = affine_jacobian(conv, (2, 5, 5))
    assert a.shape == (3 * 3 * 3, 2 * 5 * 5)
    assert conv.bias is not None
    with torch.no_grad():
        expected = conv(u[None]) - conv.bias[None, :, None, None]
    assert torch.allclose(a @ u.flatten(), expected.flatten(), atol=1e-6)


def test_input_box_of_first_layer_is_the_input_domain() -> None:
    torch.manual_seed(0)
    model = create_model("mlp", input_shape=(1, 8, 8), num_classes=10)
    box = layer_input_box(model, "1", probe=torch.rand(8, 1, 8, 8))
    assert box.low.shape == (64,)
    assert torch.equal(box.low, torch.zeros(64))
    assert torch.equal(box.high, torch.ones(64))


@pytest.mark.parametrize(("model_name", "layer"), [("mlp", "3"), ("cnn", "features.3")])
def test_input_box_of_deeper_layer_contains_every_reachable_input(
    model_name: str, layer: str
) -> None:
    torch.manual_seed(0)
    model = create_model(model_name, input_shape=(1, 8, 8), num_classes=10)
    box = layer_input_box(model, layer, probe=torch.rand(8, 1, 8, 8))
    x = torch.cat([torch.rand(256, 1, 8, 8), (torch.rand(256, 1, 8, 8) > 0.5).float()])
    seen: list[torch.Tensor] = []
    handle = dict(model.named_modules())[layer].register_forward_hook(
        lambda _m, args, _o: seen.append(args[0])
    )
    with torch.no_grad():
        model(x)
    handle.remove()
    u = seen[0]
    assert u.shape[1:] == box.low.shape
    assert bool((u >= box.low - 1e-5).all()) and bool((u <= box.high + 1e-5).all())


def test_input_box_rejects_unsupported_modules_and_non_chains() -> None:
    model = nn.Sequential(nn.Linear(3, 3), nn.Tanh(), nn.Linear(3, 2))
    with pytest.raises(ValueError, match="unsupported module Tanh"):
        layer_input_box(model, "2", probe=torch.rand(4, 3))

    class Residual(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = nn.Linear(3, 3)
            self.b = nn.Linear(3, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.b(x + self.a(x))

    with pytest.raises(ValueError, match="does not run its leaf modules as a chain"):
        layer_input_box(Residual(), "b", probe=torch.rand(4, 3))


def test_input_box_validates_bounds() -> None:
    with pytest.raises(ValueError, match="low <= high"):
        InputBox(torch.ones(2), torch.zeros(2))
