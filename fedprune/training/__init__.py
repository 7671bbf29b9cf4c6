"""Training: plain SGD loops, masked DP-SGD and the centralised experiment driver."""

from fedprune.training.dp_sgd import DPTrainResult, train_dp_sgd
from fedprune.training.loops import EvalResult, evaluate, train_sgd
from fedprune.training.masked_optimizer import MaskedDPOptimizer

__all__ = [
    "DPTrainResult",
    "EvalResult",
    "MaskedDPOptimizer",
    "evaluate",
    "train_dp_sgd",
    "train_sgd",
]
