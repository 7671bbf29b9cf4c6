"""Centralised (one machine, no Flower) runs: public warm start, then rounds of the recipe."""

from __future__ import annotations

import logging
import pickle
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from fedprune.config import RunConfig
from fedprune.data import PublicPrivateSplit
from fedprune.io import write_torch
from fedprune.masks import ParameterMask
from fedprune.pipeline import build_model, load_split, pick_mask, warm_start
from fedprune.privacy import PrivacyLedger
from fedprune.privacy.accounting import check_delta
from fedprune.privacy.ledger_store import LedgerStore
from fedprune.summary import HolderSpend, RunSummary
from fedprune.training.loops import evaluate
from fedprune.training.recipe import (
    RoundResult,
    mask_due,
    new_ledger,
    noise_source,
    round_epochs,
    train_round,
)

__all__ = [
    "CENTRAL_HOLDER",
    "MODEL_FILE",
    "CentralisedFit",
    "CentralisedRun",
    "fit_centralised",
    "load_model_state",
    "run_centralised",
    "save_model",
    "train_centralised",
]

logger = logging.getLogger(__name__)

CENTRAL_HOLDER = 0
"""Holder id of a centralised run's private set (as partition 0 of 1 in a federated run)."""

MODEL_FILE = "model.pt"
"""The final model's ``state_dict`` in a centralised run's output directory."""


@dataclass(frozen=True)
class CentralisedRun:
    """A trained model and its summary (evaluated on the split's ``test`` set)."""

    model: nn.Module
    summary: RunSummary


def run_centralised(
    config: RunConfig,
    *,
    ledger_store: LedgerStore | None = None,
    reproducible_noise: bool = False,
    progress: bool = False,
) -> RunSummary:
    """Train one model on all private data and return (and write) its summary.

    :func:`train_centralised` on the split ``config.data`` describes; see there.
    """
    split = load_split(config.data, seed=config.seed)
    return train_centralised(
        config,
        split,
        ledger_store=ledger_store,
        reproducible_noise=reproducible_noise,
        progress=progress,
    ).summary


def train_centralised(
    config: RunConfig,
    split: PublicPrivateSplit,
    *,
    ledger_store: LedgerStore | None = None,
    reproducible_noise: bool = False,
    progress: bool = False,
) -> CentralisedRun:
    """Train one model on ``split.private`` and evaluate it on ``split.test``.

    Steps: build the model from ``config.seed``; warm-start it on public data
    (``config.warmup``); then :func:`fit_centralised` (one round in ``freeze`` mode, rounds of
    ``mask.select-every`` epochs in ``select`` mode, each picking the mask from the current
    weights and public data when due); evaluate on the test set.

    ``ledger_store`` keeps the data holder's ledger (``<dataset>-central``) across runs, so
    their epsilons compose and ``privacy.max-epsilon`` holds over all of them; without one the
    run's ledger is in memory only. DP noise comes from a secure source unless
    ``reproducible_noise`` (debugging: anyone with the config can then remove it).
    Writes ``<out_dir>/summary.json`` and the final model (``<out_dir>/model.pt``, see
    :func:`save_model`) when ``config.out_dir`` is non-empty. ``split`` is normally
    ``load_split(config.data, seed=config.seed)``; a tuning split (e.g. with a validation set
    as ``test``) may stand in for it.
    """
    started = time.perf_counter()
    torch.manual_seed(config.seed)
    model = build_model(config, split)
    warm_start(model, split.public, config, progress=progress)
    public_only = evaluate(model, split.test)
    total = sum(p.numel() for p in model.parameters() if p.requires_grad)
    private = config.privacy.enabled
    holder_name = f"{config.data.dataset}-central"
    ledger: PrivacyLedger | None = None
    if private:
        p = config.privacy
        check_delta(p.delta, len(split.private), holder="the private set")
        ledger = (
            ledger_store.open(
                holder_name, accountant=p.accountant, delta=p.delta, max_epsilon=p.max_epsilon
            )
            if ledger_store is not None
            else new_ledger(p)
        )
    after_round = (
        (lambda: ledger_store.save(holder_name, ledger))
        if ledger_store is not None and ledger is not None
        else None
    )
    fit = fit_centralised(
        model,
        split,
        config,
        ledger=ledger,
        reproducible_noise=reproducible_noise,
        after_round=after_round,
        progress=progress,
    )
    mask, result, rounds = fit.mask, fit.last_round, fit.rounds
    holder = HolderSpend(num_examples=len(split.private), rounds_trained=len(rounds))
    if private and ledger is not None and result.plan is not None:
        holder.noise_multiplier = result.plan.noise_multiplier
        holder.sample_rate = result.plan.sample_rate
        holder.steps = ledger.steps
        holder.epsilon = ledger.epsilon()
        holder.delta = ledger.delta
        holder.accountant = ledger.accountant
        holder.noise = "reproducible" if reproducible_noise else "secure"
    else:
        holder.noise = "none"
    final = evaluate(model, split.test)
    summary = RunSummary(
        kind="centralised",
        config=config.to_flat(),
        public_only_test_accuracy=public_only.accuracy,
        total_coordinates=total,
        trained_coordinates=mask.num_selected,
        private=private,
        test_accuracy=final.accuracy,
        test_loss=final.loss,
        holders={str(CENTRAL_HOLDER): holder},
        duration_s=time.perf_counter() - started,
    )
    if config.out_dir:
        save_model(Path(config.out_dir), model)
        summary.write(Path(config.out_dir))
    return CentralisedRun(model=model, summary=summary)


@dataclass(frozen=True)
class CentralisedFit:
    """What :func:`fit_centralised` did: the last mask, the last round's result, the rounds."""

    mask: ParameterMask
    last_round: RoundResult
    rounds: list[int]


def fit_centralised(
    model: nn.Module,
    split: PublicPrivateSplit,
    config: RunConfig,
    *,
    ledger: PrivacyLedger | None,
    reproducible_noise: bool = False,
    after_round: Callable[[], None] | None = None,
    progress: bool = False,
) -> CentralisedFit:
    """The rounds of a centralised run on ``split.private`` (``model`` trained in place).

    ``model`` comes warm-started (or not) from the caller. Each round of :func:`round_epochs`
    picks the mask from the current weights and ``split.public`` when due and runs one
    :func:`~fedprune.training.recipe.train_round`; ``after_round`` runs after every round,
    even a failed one (e.g. to persist the ledger). ``ledger`` is required when private.

    Formal guarantees
    -----------------
    As :func:`~fedprune.training.recipe.train_round`: record-level DP of ``split.private`` as
    ``ledger`` reports; masks see only the weights and ``split.public``.
    """
    rounds = round_epochs(config, federated=False)
    mask: ParameterMask | None = None
    result: RoundResult | None = None
    for index in range(len(rounds)):
        if mask is None or mask_due(config.mask, index + 1, epochs_per_round=rounds[0]):
            mask = pick_mask(
                model, config.mask, split.public, seed=config.seed, round_number=index + 1
            )
        try:
            result = train_round(
                model,
                split.private.dataset,
                config=config,
                mask=mask,
                rounds=rounds,
                round_index=index,
                ledger=ledger,
                holder=CENTRAL_HOLDER,
                noise=noise_source(
                    reproducible=reproducible_noise,
                    seed=config.seed,
                    holder=CENTRAL_HOLDER,
                    round_index=index,
                ),
                progress=progress,
            )
        finally:
            if after_round is not None:
                after_round()
    assert result is not None and mask is not None  # round_epochs is never empty
    return CentralisedFit(mask=mask, last_round=result, rounds=rounds)


def save_model(out_dir: Path, model: nn.Module) -> Path:
    """Write ``model.state_dict()`` to ``<out_dir>/model.pt`` atomically; returns the path."""
    path = out_dir / MODEL_FILE
    write_torch(path, model.state_dict())
    return path


def load_model_state(out_dir: Path) -> dict[str, torch.Tensor]:
    """The ``state_dict`` saved by :func:`save_model` under ``out_dir``.

    Raises
    ------
    FileNotFoundError
        No ``model.pt`` under ``out_dir``.
    ValueError
        The file is not a saved ``state_dict`` (the message names it).
    """
    path = out_dir / MODEL_FILE
    if not path.exists():
        raise FileNotFoundError(f"no saved model: {path} does not exist")
    try:
        state = torch.load(path, weights_only=True)
    except (OSError, RuntimeError, ValueError, pickle.UnpicklingError) as err:
        # torch's messages span many lines; the user error is one line (the cause is chained)
        raise ValueError(
            f"corrupt model file {path}: not a saved state_dict ({type(err).__name__})"
        ) from err
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"corrupt model file {path}: not a state_dict")
    return dict(state)
