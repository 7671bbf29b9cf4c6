"""Opacus-compatible models: MLP and small CNN for 8x8/28x28 inputs, GroupNorm ResNet for CIFAR."""

from fedprune.models.registry import MODELS, available_models, create_model, register_model

__all__ = ["MODELS", "available_models", "create_model", "register_model"]
