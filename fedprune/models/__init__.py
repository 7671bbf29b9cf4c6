"""Opacus-compatible models: MLP and small CNN for 8x8/28x28 inputs, GroupNorm ResNet for CIFAR."""

from fedprune.models.registry import available_models, create_model

__all__ = ["available_models", "create_model"]
