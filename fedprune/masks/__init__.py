"""Parameter masks: which coordinates DP-SGD trains, chosen from public data only."""

from fedprune.masks.mask import MaskError, ParameterMask
from fedprune.masks.select import BiasPolicy, MaskScope, select_mask
from fedprune.masks.strategies import (
    MASK_STRATEGIES,
    GradientStrategy,
    MagnitudeStrategy,
    MaskStrategy,
    NoneStrategy,
    RandomStrategy,
    SnipStrategy,
    available_mask_strategies,
    create_mask_strategy,
    mean_loss_gradient,
    register_mask_strategy,
)

__all__ = [
    "MASK_STRATEGIES",
    "BiasPolicy",
    "GradientStrategy",
    "MagnitudeStrategy",
    "MaskError",
    "MaskScope",
    "MaskStrategy",
    "NoneStrategy",
    "ParameterMask",
    "RandomStrategy",
    "SnipStrategy",
    "available_mask_strategies",
    "create_mask_strategy",
    "mean_loss_gradient",
    "register_mask_strategy",
    "select_mask",
]
