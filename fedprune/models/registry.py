"""Model registry: ``create_model(name, input_shape=..., num_classes=...)``.

Every model here is valid for Opacus as built (no BatchNorm, no ``ModuleValidator.fix`` needed):
normalisation, where used, is GroupNorm.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from fedprune.registry import Registry

__all__ = ["MODELS", "available_models", "create_model", "register_model"]

ModelFactory = Callable[[tuple[int, int, int], int], nn.Module]
MODELS: Registry[ModelFactory] = Registry("model")
"""Model factories ``(input_shape, num_classes) -> nn.Module`` by name (``"auto"`` is not one)."""
_AUTO = "auto"


def register_model(name: str) -> Callable[[ModelFactory], ModelFactory]:
    """Register a factory ``(input_shape, num_classes) -> nn.Module`` under ``name``."""
    return MODELS.decorator(name)


def available_models() -> list[str]:
    """Names accepted by :func:`create_model` (plus ``"auto"``)."""
    return MODELS.names()


def create_model(name: str, *, input_shape: tuple[int, int, int], num_classes: int) -> nn.Module:
    """Build model ``name`` for inputs of shape ``(C, H, W)`` and ``num_classes`` outputs.

    ``"auto"`` picks ``mlp`` for small single-channel inputs (<= 16x16, e.g. digits), ``cnn``
    for larger single-channel inputs (MNIST-sized) and ``resnet`` for colour images.
    Weights are initialised from torch's global RNG: seed it first for reproducibility.

    Raises
    ------
    ValueError
        Unknown name (the message lists ``'auto'`` and the registered ones), ``input_shape`` not
        ``(C, H, W)`` of positive ints, or ``num_classes < 2``.
    """
    MODELS.check(name, extra=(_AUTO,))
    if len(input_shape) != 3 or min(input_shape) < 1:
        raise ValueError(f"expected input_shape (C, H, W) of positive ints, got {input_shape}")
    if num_classes < 2:
        raise ValueError(f"expected num_classes >= 2, got {num_classes}")
    if name == _AUTO:
        c, h, w = input_shape
        name = "resnet" if c != 1 else ("mlp" if h * w <= 256 else "cnn")
    return MODELS.get(name)(tuple(input_shape), num_classes)  # type: ignore[arg-type]


def _mlp_of_width(input_shape: tuple[int, int, int], num_classes: int, hidden: int) -> nn.Module:
    """Flatten, then two ReLU hidden layers of ``hidden`` units and a linear head."""
    c, h, w = input_shape
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(c * h * w, hidden),
        nn.ReLU(),
        nn.Linear(hidden, hidden),
        nn.ReLU(),
        nn.Linear(hidden, num_classes),
    )


@register_model("mlp")
def _mlp(input_shape: tuple[int, int, int], num_classes: int) -> nn.Module:
    """Two hidden layers of 128 units (26,122 parameters on digits)."""
    return _mlp_of_width(input_shape, num_classes, hidden=128)


@register_model("mlp-wide")
def _mlp_wide(input_shape: tuple[int, int, int], num_classes: int) -> nn.Module:
    """``mlp`` 8x wider: two hidden layers of 1024 units (1,126,410 parameters on digits), for
    studying how DP-SGD's noise, which grows with the number of trained coordinates, scales."""
    return _mlp_of_width(input_shape, num_classes, hidden=1024)


@register_model("linear")
def _linear(input_shape: tuple[int, int, int], num_classes: int) -> nn.Module:
    """Multinomial logistic regression on the flattened input: the classifier Tramèr & Boneh
    (ICLR 2021) train with DP-SGD on ScatterNet features (``data.features = "scattering"``;
    39,700 parameters on Fashion-MNIST's ``(81, 7, 7)`` coefficients)."""
    c, h, w = input_shape
    return nn.Sequential(nn.Flatten(), nn.Linear(c * h * w, num_classes))


class SmallCNN(nn.Module):
    """Two 3x3 conv blocks (GroupNorm-free, tanh-free) and a linear head.

    Input ``(B, C, H, W)`` with ``H, W >= 8``; output logits ``(B, num_classes)``.
    The first conv block keeps spatial size, the second halves it.
    """

    def __init__(self, input_shape: tuple[int, int, int], num_classes: int) -> None:
        super().__init__()
        c, h, _ = input_shape
        width = 32
        self.features = nn.Sequential(
            nn.Conv2d(c, width, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2) if h >= 16 else nn.Identity(),
            nn.Conv2d(width, 2 * width, 3, padding=1),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(4),
        )
        self.head = nn.Sequential(
            nn.Flatten(), nn.Linear(2 * width * 16, 128), nn.ReLU(), nn.Linear(128, num_classes)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


@register_model("cnn")
def _cnn(input_shape: tuple[int, int, int], num_classes: int) -> nn.Module:
    return SmallCNN(input_shape, num_classes)


class _BasicBlock(nn.Module):
    """ResNet basic block with GroupNorm (Opacus-valid)."""

    def __init__(self, cin: int, cout: int, stride: int, groups: int = 8) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.norm1 = nn.GroupNorm(groups, cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.norm2 = nn.GroupNorm(groups, cout)
        self.act = nn.ReLU()
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.GroupNorm(groups, cout)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.act(self.norm1(self.conv1(x)))
        out = self.norm2(self.conv2(out))
        return self.act(out + self.shortcut(x))


class SmallResNet(nn.Module):
    """A ResNet-10-like network with GroupNorm for 32x32 colour images (stages of 16/32/64)."""

    def __init__(self, input_shape: tuple[int, int, int], num_classes: int) -> None:
        super().__init__()
        c = input_shape[0]
        self.stem = nn.Sequential(
            nn.Conv2d(c, 16, 3, padding=1, bias=False), nn.GroupNorm(8, 16), nn.ReLU()
        )
        self.layers = nn.Sequential(
            _BasicBlock(16, 16, 1), _BasicBlock(16, 32, 2), _BasicBlock(32, 64, 2)
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(64, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(self.layers(self.stem(x))), 1))


@register_model("resnet")
def _resnet(input_shape: tuple[int, int, int], num_classes: int) -> nn.Module:
    return SmallResNet(input_shape, num_classes)
