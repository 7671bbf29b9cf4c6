"""Honest hyperparameter tuning for a cell: on public data only, or accounted on private data.

* :func:`tune_on_public`: every candidate runs masked DP-SGD *on public data* with the noise
  multiplier, expected batch size and number of steps the private run would use, and is scored
  on a public validation split. It receives only :class:`~fedprune.data.PublicDataset` objects
  and the private record count, so it cannot read a private record (nor the test set): the
  choice costs no privacy. The expected batch (not the sample rate ``q``) is matched because
  the update's noise-to-signal ratio, ``sigma * C / B``, is what the learning rate meets; ``q``
  only matters to the accounting, which public data do not need. A public set smaller than
  ``B`` trains on all of it each step with ``sigma`` scaled to keep ``sigma * C / B``.
* :func:`tune_on_private`: Papernot & Steinke's random search (centralised cells): ``K`` secret
  trials, ``K ~ D(eta, gamma)``, each a full DP-SGD run on a private training part scored by a
  noisy count on a private validation part; the best trial's model is the result, and the noise
  is calibrated so that the *whole search* spends the cell's target epsilon
  (:mod:`fedprune.privacy.tuning`). The test set is only used to evaluate the chosen model.
"""

from __future__ import annotations

import logging
import math
import secrets
from dataclasses import dataclass, replace
from typing import Any

import torch

from fedprune.compare.preset import TuningSpec
from fedprune.config import RunConfig
from fedprune.data import (
    PublicDataset,
    PublicPrivateSplit,
    split_private_validation,
    split_public_validation,
)
from fedprune.pipeline import build_model_for, load_split, pick_mask, warm_start
from fedprune.privacy import DPPlan
from fedprune.privacy.noise import SecureNoise
from fedprune.privacy.tuning import (
    TrialMechanism,
    TruncatedNegativeBinomial,
    calibrate_tuned_noise,
    sample_num_trials,
    tuned_epsilon,
)
from fedprune.summary import RunSummary
from fedprune.training.centralised import train_centralised
from fedprune.training.dp_sgd import train_dp_sgd
from fedprune.training.loops import evaluate
from fedprune.training.recipe import round_epochs, round_plan, steps_for

__all__ = [
    "PrivateTuning",
    "holder_mechanism",
    "score_on_public",
    "tune_on_private",
    "tune_on_public",
]

logger = logging.getLogger(__name__)


def holder_mechanism(config: RunConfig, *, holder_records: int, federated: bool) -> DPPlan:
    """One data holder's whole DP-SGD mechanism in a run of ``config``: its noise multiplier,
    sample rate and total steps over all rounds (``steps`` = the sum), as the recipe plans it."""
    rounds = round_epochs(config, federated=federated)
    batch = config.optim.batch_size
    sample_rate, _ = steps_for(num_examples=holder_records, batch_size=batch, epochs=1)
    steps = tuple(
        steps_for(num_examples=holder_records, batch_size=batch, epochs=e)[1] for e in rounds
    )
    plan = round_plan(config.privacy, sample_rate=sample_rate, round_steps=steps, round_index=0)
    return plan.replace(steps=sum(steps))


def score_on_public(
    config: RunConfig,
    train: PublicDataset,
    validation: PublicDataset,
    *,
    mechanism: DPPlan,
    num_classes: int,
) -> float:
    """Validation accuracy of ``config`` trained on public data with the private mechanism.

    Warm start on ``train`` (as the real run warm-starts on all public data), the mask from
    ``train`` (``select`` mode keeps the first mask), then ``mechanism.steps`` steps of masked
    DP-SGD on ``train`` with ``mechanism.noise_multiplier`` and the expected batch
    ``config.optim.batch-size`` (when ``train`` is smaller than that batch: every record each
    step, and the noise multiplier scaled by ``len(train) / batch`` so that the noise on the
    averaged update, ``sigma * C / batch``, is the private run's); accuracy on ``validation``.
    Raises ``TypeError`` for non-public data.
    """
    for data in (train, validation):
        if not isinstance(data, PublicDataset):
            raise TypeError(f"public tuning takes PublicDataset, got {type(data).__name__}")
    shape = tuple(train.dataset.tensors[0].shape[1:])
    model = build_model_for(config, input_shape=shape, num_classes=num_classes)  # type: ignore[arg-type]
    warm_start(model, train, config)
    mask = pick_mask(model, config.mask, train, seed=config.seed, round_number=1)
    batch = config.optim.batch_size
    rate = min(1.0, batch / len(train))
    # A public set smaller than the batch caps the expected batch at len(train); scale sigma so
    # the averaged update keeps the private run's noise-to-signal ratio sigma * C / batch.
    sigma = mechanism.noise_multiplier * min(1.0, len(train) / batch)
    plan = mechanism.replace(
        sample_rate=rate, noise_multiplier=sigma, max_grad_norm=config.privacy.max_grad_norm
    )
    train_dp_sgd(
        model,
        train.dataset,
        plan=plan,
        lr=config.optim.lr,
        momentum=config.optim.momentum,
        mask=mask,
        noise=SecureNoise(),
    )
    return evaluate(model, validation.dataset).accuracy


def tune_on_public(
    config: RunConfig, spec: TuningSpec, *, federated: bool
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The candidate of ``spec`` with the best public validation accuracy (first on ties).

    Returns the chosen overrides and one record per candidate (``candidate``, ``score``,
    ``noise_multiplier``, ``steps``). The private data are loaded only to learn their size
    (``len``); federated holders are assumed to hold ``n / num_clients`` records each.
    """
    if not config.privacy.enabled:
        raise ValueError(
            "public tuning mimics the private DP-SGD run: use tuning 'none' for non-private cells"
        )
    split = load_split(config.data, seed=config.seed)
    holder = len(split.private)
    if federated:
        holder = max(1, holder // config.federated.num_clients)
    train, validation = split_public_validation(
        split.public, fraction=spec.validation_fraction, seed=config.seed
    )
    records: list[dict[str, Any]] = []
    candidates = spec.combinations()
    for candidate in candidates:
        trial = config.replace(**candidate)
        mechanism = holder_mechanism(trial, holder_records=holder, federated=federated)
        score = score_on_public(
            trial, train, validation, mechanism=mechanism, num_classes=split.num_classes
        )
        logger.info("public tuning %s: validation accuracy %.4f", candidate, score)
        records.append(
            {
                "candidate": candidate,
                "score": score,
                "noise_multiplier": mechanism.noise_multiplier,
                "steps": mechanism.steps,
            }
        )
    best = max(range(len(records)), key=lambda i: (records[i]["score"], -i))
    return candidates[best], records


@dataclass(frozen=True)
class PrivateTuning:
    """The result of :func:`tune_on_private`: the chosen trial's summary (evaluated on the
    test set), the search's total epsilon and its trials (candidate and noisy score)."""

    summary: RunSummary
    total_epsilon: float
    noise_multiplier: float
    trials: list[dict[str, Any]]
    chosen: dict[str, Any]


def tune_on_private(config: RunConfig, spec: TuningSpec) -> PrivateTuning:
    """Papernot & Steinke random search for a centralised cell (module docstring).

    Privacy: every trial is DP-SGD at noise ``sigma`` on the private training part plus a
    Gaussian count (std ``spec.score_noise``) on the private validation part; ``sigma`` is
    calibrated so that :func:`fedprune.privacy.tuning.tuned_epsilon` of the search equals
    ``privacy.target-epsilon`` at ``privacy.delta``. The number of trials and the candidate of
    each trial come from a secure random source.
    """
    if not config.privacy.enabled:
        raise ValueError("private tuning needs privacy.enabled = true")
    if config.privacy.accountant != "rdp":
        raise ValueError("private tuning is accounted in RDP: set privacy.accountant = 'rdp'")
    split = load_split(config.data, seed=config.seed)
    train, validation = split_private_validation(
        split.private, fraction=spec.validation_fraction, seed=config.seed
    )
    distribution = TruncatedNegativeBinomial(eta=spec.eta, gamma=spec.gamma)
    base = holder_mechanism(config, holder_records=len(train), federated=False)

    def trial_at(sigma: float) -> TrialMechanism:
        return TrialMechanism(sigma, base.sample_rate, base.steps, spec.score_noise)

    p = config.privacy
    sigma = calibrate_tuned_noise(
        p.target_epsilon, make_trial=trial_at, distribution=distribution, delta=p.delta
    )
    total = tuned_epsilon(trial_at(sigma), distribution, delta=p.delta)
    trial_split = PublicPrivateSplit(
        public=split.public,
        private=train,
        test=validation.dataset,
        num_classes=split.num_classes,
        input_shape=split.input_shape,
    )
    num_trials = sample_num_trials(distribution)
    pick = secrets.SystemRandom()
    candidates = spec.combinations()
    trials: list[dict[str, Any]] = []
    best_model, best_summary, best_score, chosen = None, None, -math.inf, {}
    n_val = len(validation)
    for index in range(num_trials):
        candidate = pick.choice(candidates)
        trial_config = config.replace(
            **candidate, **{"privacy.noise-multiplier": sigma, "out-dir": ""}
        )
        run = train_centralised(trial_config, trial_split)
        correct = run.summary.test_accuracy * n_val  # type: ignore[operator]
        noise = SecureNoise().gaussian(torch.zeros(1), std=spec.score_noise)
        score = (correct + float(noise[0])) / n_val
        trials.append({"trial": index, "candidate": candidate, "noisy_score": score})
        if score > best_score:
            best_model, best_summary, best_score, chosen = run.model, run.summary, score, candidate
    assert best_model is not None and best_summary is not None  # num_trials >= 1
    public_only = build_model_for(
        config, input_shape=split.input_shape, num_classes=split.num_classes
    )
    warm_start(public_only, split.public, config)
    final = evaluate(best_model, split.test)
    summary = replace(
        best_summary,
        config=config.replace(**chosen).to_flat(),
        public_only_test_accuracy=evaluate(public_only, split.test).accuracy,
        test_accuracy=final.accuracy,
        test_loss=final.loss,
    )
    return PrivateTuning(
        summary=summary, total_epsilon=total, noise_multiplier=sigma, trials=trials, chosen=chosen
    )
