"""Centralised (one machine, no Flower) runs: public warm start, then (masked) DP-SGD or SGD."""

from __future__ import annotations

import itertools
import logging
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fedprune import __version__
from fedprune.config import RunConfig
from fedprune.io import write_json
from fedprune.masks import ParameterMask
from fedprune.pipeline import build_model, load_split, make_plan, pick_mask, steps_for, warm_start
from fedprune.privacy import PrivacyLedger, ReproducibleNoise, SecureNoise
from fedprune.training.dp_sgd import train_dp_sgd
from fedprune.training.loops import evaluate, train_sgd

__all__ = ["run_centralised"]

logger = logging.getLogger(__name__)


def run_centralised(config: RunConfig, *, progress: bool = False) -> dict[str, Any]:
    """Train one model on all private data and return (and write) its summary.

    Steps: split the dataset public/private; build the model from ``config.seed``; warm-start it
    on public data (``config.warmup``); choose the mask from the warm model and public data
    (``config.mask``; ``freeze`` picks once, ``select`` re-picks every ``mask.select_every``
    steps); then run ``optim.epochs`` epochs of masked DP-SGD (or plain dense SGD when
    ``privacy.enabled`` is false) and evaluate on the test set.

    Writes ``<out_dir>/summary.json`` (results plus the fully resolved config) when
    ``config.out_dir`` is non-empty.
    """
    started = time.perf_counter()
    torch.manual_seed(config.seed)
    split = load_split(config.data, seed=config.seed)
    model = build_model(config, split)
    warm_start(model, split.public, config, progress=progress)
    public_only = evaluate(model, split.test)
    total = sum(p.numel() for p in model.parameters() if p.requires_grad)
    n = len(split.private)

    summary: dict[str, Any] = {
        "fedprune_version": __version__,
        "mode": "centralised",
        "public_only_test_accuracy": public_only.accuracy,
        "num_private_examples": n,
        "num_public_examples": len(split.public),
        "total_coordinates": total,
    }
    if not config.privacy.enabled:
        train_sgd(
            model,
            split.private.dataset,
            epochs=config.optim.epochs,
            lr=config.optim.lr,
            batch_size=config.optim.batch_size,
            momentum=config.optim.momentum,
            seed=config.seed,
            progress=progress,
            desc="sgd (non-private)",
        )
        summary.update(
            private=False,
            epsilon=None,
            delta=None,
            noise_multiplier=None,
            sample_rate=None,
            steps=None,
            accountant=None,
            trained_coordinates=total,
        )
    else:
        sample_rate, steps = steps_for(
            num_examples=n, batch_size=config.optim.batch_size, epochs=config.optim.epochs
        )
        plan = make_plan(config.privacy, sample_rate=sample_rate, steps=steps)
        ledger = PrivacyLedger(
            accountant=plan.accountant, delta=plan.delta, max_epsilon=config.privacy.max_epsilon
        )
        mask: ParameterMask | None = None
        if config.mask.strategy != "none":
            mask = pick_mask(model, config.mask, split.public, seed=config.seed)
        seeds = itertools.count(config.seed + 1)

        def reselect(current: nn.Module) -> ParameterMask:
            """Re-pick from the current weights and public data; a fresh seed each time."""
            return pick_mask(current, config.mask, split.public, seed=next(seeds))

        result = train_dp_sgd(
            model,
            split.private.dataset,
            plan=plan,
            lr=config.optim.lr,
            momentum=config.optim.momentum,
            mask=mask,
            ledger=ledger,
            reselect=reselect if config.mask.mode == "select" and mask is not None else None,
            reselect_every=config.mask.select_every,
            noise=SecureNoise() if config.privacy.secure_noise else ReproducibleNoise(config.seed),
            progress=progress,
        )
        summary.update(
            private=True,
            epsilon=result.epsilon,
            delta=plan.delta,
            noise_multiplier=plan.noise_multiplier,
            sample_rate=plan.sample_rate,
            steps=plan.steps,
            accountant=plan.accountant,
            max_grad_norm=plan.max_grad_norm,
            trained_coordinates=result.trained_coordinates,
        )
    final = evaluate(model, split.test)
    summary.update(
        test_accuracy=final.accuracy,
        test_loss=final.loss,
        trained_density=summary["trained_coordinates"] / total,
        duration_s=time.perf_counter() - started,
        config=config.to_flat(),
    )
    if config.out_dir:
        write_json(Path(config.out_dir) / "summary.json", summary)
    return summary
