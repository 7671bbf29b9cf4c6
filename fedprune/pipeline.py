"""Building blocks shared by centralised and federated runs: data, model, warm start, masks.

Each function takes the relevant part of a :class:`fedprune.config.RunConfig`, so centralised
training, the Flower server and the Flower clients build identical objects from one config.
"""

from __future__ import annotations

import logging

import torch
from torch import nn

from fedprune.config import DataConfig, MaskConfig, RunConfig
from fedprune.data import (
    DatasetBundle,
    PublicDataset,
    PublicPrivateSplit,
    featurise_split,
    load_dataset,
    subsample_private,
)
from fedprune.data import split_public_private as _split
from fedprune.masks import ParameterMask, select_mask
from fedprune.models import create_model
from fedprune.seeding import derive_seed
from fedprune.training.loops import train_sgd

__all__ = ["build_model", "build_model_for", "load_split", "pick_mask", "warm_start"]

logger = logging.getLogger(__name__)


def load_split(data: DataConfig, *, seed: int) -> PublicPrivateSplit:
    """Load ``data.dataset`` (and ``data.other_dataset`` if used) and split it public/private;
    a positive ``data.private_records`` then cuts the private part to a fixed subset, and every
    record is mapped through the fixed feature map ``data.features``."""
    bundle = _load(data.dataset, data)
    other: DatasetBundle | None = None
    if data.public_kind == "other-dataset":
        other = _load(data.other_dataset, data)
    split = _split(
        bundle,
        public_fraction=data.public_fraction,
        public_kind=data.public_kind,
        seed=seed,
        public_classes=data.public_class_list,
        other=other,
    )
    if data.private_records:
        split = subsample_private(split, records=data.private_records, seed=seed)
    return featurise_split(split, data.features)


def _load(name: str, data: DataConfig) -> DatasetBundle:
    return load_dataset(name, data_dir=data.data_dir, download=data.download)


def build_model(config: RunConfig, split: PublicPrivateSplit) -> nn.Module:
    """A fresh model for ``split``'s task, initialised from ``config.seed``."""
    return build_model_for(config, input_shape=split.input_shape, num_classes=split.num_classes)


def build_model_for(
    config: RunConfig, *, input_shape: tuple[int, int, int], num_classes: int
) -> nn.Module:
    """A fresh ``config.model`` for inputs ``(C, H, W)`` and ``num_classes``, initialised from
    ``config.seed`` (the caller's torch RNG state is left as it was)."""
    with torch.random.fork_rng():
        torch.manual_seed(config.seed)
        return create_model(config.model, input_shape=input_shape, num_classes=num_classes)


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
    model: nn.Module, mask: MaskConfig, public: PublicDataset, *, seed: int, round_number: int
) -> ParameterMask:
    """The mask ``mask.strategy`` picks before round ``round_number`` (model + public data).

    Privacy: only ``public`` and a seed derived from ``(seed, round_number)`` are consulted, never
    private data, so the mask costs no privacy. ``"none"`` gives the dense mask. Centralised
    runs and the federated server call this with the same arguments for the same round.
    """
    return select_mask(
        model,
        strategy=mask.strategy,
        density=mask.density,
        scope=mask.scope,
        public=public,
        seed=derive_seed(seed, "mask", round_number),
        bias_policy=mask.bias_policy,
    )
