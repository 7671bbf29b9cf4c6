"""Find a model's affine layers by name, read their inputs/outputs and replace their outputs."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
from torch import nn

__all__ = [
    "AFFINE_LAYER_TYPES",
    "affine_layer_names",
    "apply_weight",
    "capture_layer_io",
    "default_layer_name",
    "get_affine_layer",
    "replace_layer_output",
]

AFFINE_LAYER_TYPES: tuple[type[nn.Module], ...] = (nn.Linear, nn.Conv2d)
"""Module types whose output is an affine map ``W x + b`` of their input (pruning targets)."""


def affine_layer_names(model: nn.Module) -> list[str]:
    """Names (as in ``model.named_modules()``) of the Linear/Conv2d modules, in order."""
    return [name for name, m in model.named_modules() if isinstance(m, AFFINE_LAYER_TYPES)]


def default_layer_name(model: nn.Module) -> str:
    """The first affine layer: the one whose input is the model's input (for a chain model)."""
    names = affine_layer_names(model)
    if not names:
        raise ValueError(f"model {type(model).__name__} has no nn.Linear or nn.Conv2d layer")
    return names[0]


def get_affine_layer(model: nn.Module, name: str) -> nn.Linear | nn.Conv2d:
    """The ``nn.Linear``/``nn.Conv2d`` module called ``name``.

    Raises
    ------
    ValueError
        ``name`` is not an affine layer of ``model`` (the message lists the valid names).
    """
    module = dict(model.named_modules()).get(name)
    if not isinstance(module, nn.Linear | nn.Conv2d):
        raise ValueError(
            f"unknown layer {name!r}; expected one of {affine_layer_names(model)} "
            "(the nn.Linear/nn.Conv2d modules of the model)"
        )
    return module


def apply_weight(
    layer: nn.Linear | nn.Conv2d, layer_input: torch.Tensor, weight: torch.Tensor
) -> torch.Tensor:
    """The linear part of ``layer`` (no bias) with ``weight`` in place of ``layer.weight``.

    For ``nn.Linear`` this is ``layer_input @ weight.T``; for ``nn.Conv2d`` the same convolution
    (stride, padding, padding mode, dilation, groups) with ``weight``. Shapes follow the layer.
    """
    if isinstance(layer, nn.Linear):
        return nn.functional.linear(layer_input, weight)
    return layer._conv_forward(layer_input, weight, None)


@torch.no_grad()
def capture_layer_io(
    model: nn.Module, layer_name: str, x: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Run ``model(x)`` in eval mode and return the input and output of layer ``layer_name``.

    Returns
    -------
    (layer_input, layer_output):
        Detached tensors with batch dimension ``x.shape[0]``; the output is the layer's affine
        output ``W u + b`` (before any activation function).
    """
    layer = get_affine_layer(model, layer_name)
    seen: dict[str, torch.Tensor] = {}

    def hook(_: nn.Module, args: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        seen["input"], seen["output"] = args[0].detach(), output.detach()

    was_training = model.training
    model.eval()
    handle = layer.register_forward_hook(hook)
    try:
        model(x)
    finally:
        handle.remove()
        model.train(was_training)
    return seen["input"], seen["output"]


@contextmanager
def replace_layer_output(
    model: nn.Module, layer_name: str, fn: Callable[[torch.Tensor], torch.Tensor]
) -> Iterator[nn.Module]:
    """Within the block, layer ``layer_name`` returns ``fn(output)`` instead of ``output``.

    Used to add noise to a layer's activations; the hook is removed on exit.
    """
    layer = get_affine_layer(model, layer_name)
    handle = layer.register_forward_hook(lambda _m, _a, output: fn(output))
    try:
        yield model
    finally:
        handle.remove()
