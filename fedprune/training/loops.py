"""Plain (non-private) training and evaluation loops shared by every entry point."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

__all__ = ["EvalResult", "evaluate", "train_sgd"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class EvalResult:
    """Mean cross-entropy ``loss`` and ``accuracy`` in [0, 1] over ``num_examples`` records."""

    loss: float
    accuracy: float
    num_examples: int


@torch.no_grad()
def evaluate(model: nn.Module, dataset: Dataset, *, batch_size: int = 512) -> EvalResult:
    """Evaluate ``model`` on ``dataset`` of ``(x, y)`` pairs; leaves the model's mode as it was."""
    was_training = model.training
    model.eval()
    loss_sum, correct, n = 0.0, 0, 0
    for x, y in DataLoader(dataset, batch_size=batch_size):
        logits = model(x)
        loss_sum += float(nn.functional.cross_entropy(logits, y, reduction="sum"))
        correct += int((logits.argmax(dim=1) == y).sum())
        n += len(y)
    model.train(was_training)
    if n == 0:
        raise ValueError("cannot evaluate on an empty dataset")
    return EvalResult(loss=loss_sum / n, accuracy=correct / n, num_examples=n)


def train_sgd(
    model: nn.Module,
    dataset: Dataset,
    *,
    epochs: int,
    lr: float,
    batch_size: int = 64,
    momentum: float = 0.9,
    seed: int = 0,
    progress: bool = False,
    desc: str = "train",
) -> nn.Module:
    """Non-private mini-batch SGD on every trainable parameter (in place; returns ``model``).

    Used for public warm starts and non-private baselines. No privacy guarantee of any kind:
    never call this on private records in a DP run.

    Parameters
    ----------
    epochs:
        Passes over ``dataset`` (0 returns the model untouched).
    lr, momentum:
        SGD hyper-parameters.
    seed:
        Seeds the shuffling generator, so the same seed and initial model give the same result.
    """
    if epochs < 0:
        raise ValueError(f"expected epochs >= 0, got {epochs}")
    if epochs == 0:
        return model
    generator = torch.Generator().manual_seed(seed)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=True, generator=generator)
    optimizer = torch.optim.SGD(
        [p for p in model.parameters() if p.requires_grad], lr=lr, momentum=momentum
    )
    model.train()
    for _ in tqdm(range(epochs), desc=desc, disable=not progress, leave=False):
        for x, y in loader:
            optimizer.zero_grad(set_to_none=True)
            nn.functional.cross_entropy(model(x), y).backward()
            optimizer.step()
    return model
