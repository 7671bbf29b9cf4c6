"""Building blocks shared by centralised and federated runs: data, model, warm start, masks, plans.

Each function takes the relevant part of a :class:`fedprune.config.RunConfig`, so centralised
training, the Flower server and the Flower clients build identical objects from one config.
"""

from __future__ import annotations

import logging
import math

import torch
from torch import nn

from fedprune.config import DataConfig, MaskConfig, PrivacyConfig, RunConfig
from fedprune.data import DatasetBundle, PublicDataset, PublicPrivateSplit, load_dataset
from fedprune.data import split_public_private as _split
from fedprune.masks import ParameterMask, select_mask
from fedprune.models import create_model
from fedprune.privacy import DPPlan
from fedprune.training.loops import train_sgd

__all__ = ["build_model", "load_split", "make_plan", "pick_mask", "steps_for", "warm_start"]

logger = logging.getLogger(__name__)


def load_split(data: DataConfig, *, seed: int) -> PublicPrivateSplit:
    """Load ``data.dataset`` (and ``data.other_dataset`` if used) and split it public/private."""
    bundle = _load(data.dataset, data)
    other: DatasetBundle | None = None
    if data.public_kind == "other-dataset":
        other = _load(data.other_dataset, data)
    return _split(
        bundle,
        public_fraction=data.public_fraction,
        public_kind=data.public_kind,
        seed=seed,
        public_classes=data.public_class_list,
        other=other,
    )


def _load(name: str, data: DataConfig) -> DatasetBundle:
    return load_dataset(name, data_dir=data.data_dir, download=data.download)


def build_model(config: RunConfig, split: PublicPrivateSplit) -> nn.Module:
    """A fresh model for ``split``'s task, initialised from ``config.seed``."""
    with torch.random.fork_rng():
        torch.manual_seed(config.seed)
        return create_model(
            config.model, input_shape=split.input_shape, num_classes=split.num_classes
        )


def warm_start(
    model: nn.Module, public: PublicDataset, config: RunConfig, *, progress: bool = False
) -> nn.Module:
    """Non-private SGD on the *public* data only (``config.warmup``): costs no privacy."""
    if not isinstance(public, PublicDataset):
        raise TypeError(f"warm start takes a PublicDataset, got {type(public).__name__}")
    return train_sgd(
        model,
        public.dataset,
        epochs=config.warmup.epochs,
        lr=config.warmup.lr,
        seed=config.seed,
        progress=progress,
        desc="public warm-up",
    )


def pick_mask(
    model: nn.Module, mask: MaskConfig, public: PublicDataset, *, seed: int
) -> ParameterMask:
    """The mask ``mask.strategy`` picks from ``model``'s current weights and public data.

    Privacy: only ``public`` (and ``seed``) is consulted, never private data, so the mask costs
    no privacy. Vary ``seed`` between re-selections so ``random`` re-draws.
    """
    return select_mask(
        model,
        strategy=mask.strategy,
        density=mask.density,
        scope=mask.scope,
        public=public,
        seed=seed,
        bias_policy=mask.bias_policy,
    )


def steps_for(*, num_examples: int, batch_size: int, epochs: int) -> tuple[float, int]:
    """``(sample_rate, steps)`` for ``epochs`` passes of Poisson batches of expected size
    ``batch_size`` over ``num_examples`` records (``sample_rate = min(1, batch_size / n)``)."""
    if num_examples < 1:
        raise ValueError(f"expected num_examples >= 1, got {num_examples}")
    sample_rate = min(1.0, batch_size / num_examples)
    return sample_rate, max(1, math.ceil(epochs / sample_rate))


def make_plan(privacy: PrivacyConfig, *, sample_rate: float, steps: int) -> DPPlan:
    """The DP-SGD plan for ``steps`` steps: fixed ``noise_multiplier`` if set, else calibrated so
    that the ``steps`` steps spend exactly up to ``target_epsilon``."""
    if privacy.noise_multiplier > 0:
        return DPPlan(
            noise_multiplier=privacy.noise_multiplier,
            max_grad_norm=privacy.max_grad_norm,
            sample_rate=sample_rate,
            steps=steps,
            delta=privacy.delta,
            accountant=privacy.accountant,
        )
    return DPPlan.calibrate(
        target_epsilon=privacy.target_epsilon,
        delta=privacy.delta,
        sample_rate=sample_rate,
        steps=steps,
        max_grad_norm=privacy.max_grad_norm,
        accountant=privacy.accountant,
    )
