"""Checkable sensitivity bounds of an affine layer's output with respect to its bounded input.

For an affine layer ``h = A u + b`` (``A`` its Jacobian, ``u`` flattened) and inputs confined to a
box ``low <= u <= high`` (width ``w = high - low``), changing ``u`` to ``u'`` inside the box changes
``h`` by ``A (u - u')`` with ``|u_j - u'_j| <= w_j``. Two neighbouring notions are reported:

* **whole input** (``u`` and ``u'`` anywhere in the box, i.e. any two inputs):
  ``Δ1 = sum_ij |A_ij| w_j`` (each output coordinate bounded separately, then summed) and
  ``Δ2 = min(||s||_2, ||A diag(w)||_op * sqrt(d))`` with ``s_i = sum_j |A_ij| w_j`` and ``d`` the
  input dimension; both terms bound ``||A (u - u')||_2``, so their minimum does.
* **one coordinate** (``u`` and ``u'`` differ in a single coordinate ``j``, e.g. one pixel for a
  first layer): ``Δ1 = max_j w_j ||A_:j||_1`` and ``Δ2 = max_j w_j ||A_:j||_2`` (both exact).

The box of a layer's input comes from interval bound propagation of the model's input domain (e.g.
``[0, 1]`` pixels) through the modules before the layer; the box is a sound over-approximation, so
the sensitivities are upper bounds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from fedprune.activation.layers import apply_weight, get_affine_layer

__all__ = [
    "InputBox",
    "Sensitivity",
    "affine_jacobian",
    "affine_sensitivity",
    "layer_input_box",
]

_MONOTONE_TYPES: tuple[type[nn.Module], ...] = (
    nn.ReLU,
    nn.Flatten,
    nn.Identity,
    nn.MaxPool2d,
    nn.AvgPool2d,
    nn.AdaptiveAvgPool2d,
)
"""Modules non-decreasing in every input coordinate: a box maps to ``[f(low), f(high)]``."""


@dataclass(frozen=True)
class InputBox:
    """Per-coordinate bounds ``low <= u <= high`` of one example's layer input (same shape)."""

    low: torch.Tensor
    high: torch.Tensor

    def __post_init__(self) -> None:
        if self.low.shape != self.high.shape:
            raise ValueError(f"expected equal shapes, got {self.low.shape} and {self.high.shape}")
        if bool((self.high < self.low).any()):
            raise ValueError("expected low <= high in every coordinate")

    @property
    def width(self) -> torch.Tensor:
        """``high - low``, same shape as the bounds."""
        return self.high - self.low


def _leaves(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if next(m.children(), None) is None]


@torch.no_grad()
def layer_input_box(
    model: nn.Module,
    layer_name: str,
    *,
    probe: torch.Tensor,
    input_low: float = 0.0,
    input_high: float = 1.0,
) -> InputBox:
    """Bounds on the input of layer ``layer_name`` when every model input lies in ``[low, high]``.

    The model must compute its leaf modules one after another in registration order (as
    ``nn.Sequential`` models and fedprune's ``mlp``/``cnn`` do); this is checked by running the
    chain on ``probe`` (a batch of real inputs) and comparing with ``model(probe)``. Affine leaves
    are propagated exactly as intervals (centre ``A c + b``, radius ``|A| r``); monotone leaves
    (ReLU, pooling, flatten) map ``low`` and ``high`` separately.

    Raises
    ------
    ValueError
        The model is not such a chain, or a leaf before the layer is of an unsupported type.
    """
    target = get_affine_layer(model, layer_name)
    leaves = _leaves(model)
    was_training = model.training
    model.eval()
    try:
        chained = probe
        for leaf in leaves:
            chained = leaf(chained)
        if not torch.allclose(chained, model(probe), rtol=1e-4, atol=1e-5):
            raise ValueError(
                f"cannot bound the input of layer {layer_name!r}: {type(model).__name__} does not "
                "run its leaf modules as a chain in registration order"
            )
    finally:
        model.train(was_training)
    low = torch.full_like(probe[:1], input_low)
    high = torch.full_like(probe[:1], input_high)
    for leaf in leaves:
        if leaf is target:
            return InputBox(low[0], high[0])
        if isinstance(leaf, nn.Linear | nn.Conv2d):
            centre, radius = (high + low) / 2, (high - low) / 2
            centre = leaf(centre)
            radius = apply_weight(leaf, radius, leaf.weight.abs())
            low, high = centre - radius, centre + radius
        elif isinstance(leaf, _MONOTONE_TYPES):
            low, high = leaf(low), leaf(high)
        else:
            raise ValueError(
                f"cannot bound the input of layer {layer_name!r}: unsupported module "
                f"{type(leaf).__name__} before it (supported: Linear, Conv2d, "
                f"{', '.join(t.__name__ for t in _MONOTONE_TYPES)})"
            )
    raise AssertionError("unreachable: the target layer is one of the model's leaves")


@torch.no_grad()
def affine_jacobian(layer: nn.Linear | nn.Conv2d, input_shape: tuple[int, ...]) -> torch.Tensor:
    """The matrix ``A`` (``out_dim x in_dim``) with ``layer(u) = A u.flatten() + bias``.

    ``input_shape`` is one example's input shape (``(in_features,)`` or ``(C, H, W)``). For
    ``nn.Linear`` this is ``layer.weight``; a convolution is applied to the standard basis.
    """
    if isinstance(layer, nn.Linear):
        return layer.weight.detach().clone()
    d = math.prod(input_shape)
    basis = torch.eye(d, dtype=layer.weight.dtype).reshape(d, *input_shape)
    return apply_weight(layer, basis, layer.weight.detach()).reshape(d, -1).T.contiguous()


@dataclass(frozen=True)
class Sensitivity:
    """L1/L2 sensitivities of an affine map's output over a box of inputs (see module docstring).

    Attributes
    ----------
    l1_whole_input, l2_whole_input:
        Upper bounds on ``||h(u) - h(u')||_1`` and ``||h(u) - h(u')||_2`` over any ``u, u'`` in
        the box.
    l1_one_coordinate, l2_one_coordinate:
        The same when ``u`` and ``u'`` differ in one coordinate only (exact values).
    l2_per_coordinate_bound, l2_operator_bound:
        The two bounds whose minimum is ``l2_whole_input`` (``||s||_2`` and
        ``||A diag(w)||_op sqrt(d)``), kept so the choice can be checked.
    """

    l1_whole_input: float
    l2_whole_input: float
    l1_one_coordinate: float
    l2_one_coordinate: float
    l2_per_coordinate_bound: float
    l2_operator_bound: float


def affine_sensitivity(jacobian: torch.Tensor, width: torch.Tensor) -> Sensitivity:
    """Sensitivities of ``u -> A u + b`` (``A = jacobian``) over a box of per-coordinate ``width``.

    ``jacobian`` is ``(out_dim, in_dim)``; ``width`` has ``in_dim`` entries (any shape), all >= 0.
    """
    a = jacobian.detach().to(torch.float64)
    w = width.detach().flatten().to(torch.float64)
    if a.ndim != 2 or a.shape[1] != w.numel():
        raise ValueError(
            f"expected jacobian (out_dim, {w.numel()}) to match width, got {tuple(a.shape)}"
        )
    if bool((w < 0).any()):
        raise ValueError("expected width >= 0 in every coordinate")
    scaled = a * w  # column j scaled by w_j: A diag(w)
    per_output = scaled.abs().sum(dim=1)
    l2_per_coordinate = float(per_output.norm())
    l2_operator = float(torch.linalg.matrix_norm(scaled, ord=2)) * math.sqrt(w.numel())
    return Sensitivity(
        l1_whole_input=float(per_output.sum()),
        l2_whole_input=min(l2_per_coordinate, l2_operator),
        l1_one_coordinate=float(scaled.abs().sum(dim=0).max()),
        l2_one_coordinate=float(scaled.norm(dim=0).max()),
        l2_per_coordinate_bound=l2_per_coordinate,
        l2_operator_bound=l2_operator,
    )
