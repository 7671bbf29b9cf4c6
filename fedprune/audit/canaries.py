"""Canary audit: crafted records inserted at random into the private data of one training run.

``m`` canaries are uniform-noise images with uniformly random labels: far from the data, so a
model can only fit them by memorising each one, the worst case a per-record guarantee must
cover. Each canary is inserted independently with probability 1/2 (the one-run audit setting
of Steinke, Nasr and Jagielski, 2023); one model is trained with the target's recipe on the
private records plus the inserted canaries, and the attack scores every canary by its
logit-scaled confidence ``phi`` under that model. Inserted canaries are the members, left-out
ones the non-members; the ROC and epsilon lower bound come from :mod:`fedprune.audit.metrics`
and :mod:`fedprune.audit.bounds`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from numpy.typing import NDArray
from torch.utils.data import TensorDataset

from fedprune.audit.mia import example_statistics
from fedprune.audit.replicate import train_like
from fedprune.config import RunConfig
from fedprune.data import PublicPrivateSplit
from fedprune.seeding import derive_seed

__all__ = ["CanaryRun", "make_canaries", "run_canaries"]


def make_canaries(
    count: int, *, input_shape: tuple[int, int, int], num_classes: int, seed: int
) -> TensorDataset:
    """``count`` canaries: float32 ``(count, C, H, W)`` uniform in ``[0, 1]``, int64 labels.

    Deterministic in ``seed``; they share nothing with any dataset.
    """
    if count < 2:
        raise ValueError(f"expected at least 2 canaries, got {count}")
    generator = torch.Generator().manual_seed(seed)
    x = torch.rand((count, *input_shape), generator=generator)
    y = torch.randint(0, num_classes, (count,), generator=generator)
    return TensorDataset(x, y)


@dataclass(frozen=True)
class CanaryRun:
    """Scores of one canary run.

    Attributes
    ----------
    inserted:
        bool ``(m,)``: whether canary ``j`` was in the training data.
    scores:
        float64 ``(m,)``: its ``phi`` under the model trained with the inserted ones.
    """

    inserted: NDArray[np.bool_]
    scores: NDArray[np.float64]

    @property
    def member_scores(self) -> NDArray[np.float64]:
        """Scores of the inserted canaries."""
        return self.scores[self.inserted]

    @property
    def nonmember_scores(self) -> NDArray[np.float64]:
        """Scores of the left-out canaries."""
        return self.scores[~self.inserted]


def run_canaries(
    config: RunConfig, split: PublicPrivateSplit, *, count: int, seed: int
) -> CanaryRun:
    """Insert each of ``count`` canaries with probability 1/2, train once, score them all.

    Privacy: the trained model is the auditor's (private records + canaries, throw-away
    ledger); the inclusion draw comes from ``seed``, which the attack never reads.

    Raises
    ------
    ValueError
        Fewer than 2 canaries, or a draw that puts all of them on one side (retry another seed).
    """
    canaries = make_canaries(
        count,
        input_shape=split.input_shape,
        num_classes=split.num_classes,
        seed=derive_seed(seed, "canaries"),
    )
    rng = np.random.default_rng(derive_seed(seed, "canary-inclusion"))
    inserted = rng.random(count) < 0.5
    if inserted.all() or not inserted.any():
        raise ValueError(f"all {count} canaries fell on one side of the draw; use another seed")
    x_priv, y_priv = split.private.dataset.tensors
    x_can, y_can = canaries.tensors
    keep = torch.from_numpy(inserted)
    private = TensorDataset(torch.cat([x_priv, x_can[keep]]), torch.cat([y_priv, y_can[keep]]))
    model = train_like(
        config,
        split,
        private,
        description=f"{len(x_priv)} private records + {int(inserted.sum())} canaries",
    )
    _, phi = example_statistics(model, canaries)
    return CanaryRun(inserted=inserted, scores=phi)
