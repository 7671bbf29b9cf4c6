"""Training: plain SGD loops, masked DP-SGD and the centralised experiment driver."""

from fedprune.training.loops import EvalResult, evaluate, train_sgd

__all__ = ["EvalResult", "evaluate", "train_sgd"]
