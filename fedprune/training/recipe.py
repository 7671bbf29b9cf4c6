"""The one local-training recipe: what a data holder does with a mask for one round.

Centralised runs (:mod:`fedprune.training.centralised`) and federated client rounds
(:mod:`fedprune.federated.client_round`) both call :func:`train_round`, so the same settings
mean the same local steps in both:

* **Rounds.** Training is a sequence of rounds, each with one fixed mask. A federated round is
  ``federated.local-epochs`` epochs on every client. A centralised run in ``freeze`` mode is a
  single round of ``optim.epochs`` epochs; in ``select`` mode it has rounds of
  ``mask.select-every`` epochs (:func:`round_epochs`).
* **Mask cadence.** ``freeze`` picks before round 1 only; ``select`` re-picks before every round
  that starts at a multiple of ``mask.select-every`` epochs (:func:`mask_due`), from the current
  weights and public data only.
* **Privacy.** Each round is ``ceil(epochs / q)`` Poisson steps at ``q = batch_size / n``; the
  noise is calibrated so that all planned rounds together spend ``privacy.target-epsilon``
  (:func:`round_plan`), and every step is recorded in the holder's ledger.
* **Non-private** runs (``privacy.enabled = false``) take plain SGD steps on the *same*
  coordinates (the mask's), so they differ from DP-SGD only in clipping and noise.
* ``mask.strategy = "none"`` is the dense mask (every coordinate), never ``None``.
* **Seeds** come from :func:`fedprune.seeding.derive_seed` with the holder and round. DP noise
  and Poisson sampling are *not* seeded: they come from a cryptographically secure source unless
  the holder itself opts into reproducible noise (:func:`noise_source`).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from torch import nn
from torch.utils.data import Dataset

from fedprune.config import MaskConfig, PrivacyConfig, RunConfig
from fedprune.masks import ParameterMask
from fedprune.privacy import DPPlan, PrivacyLedger
from fedprune.privacy.noise import NoiseSource, ReproducibleNoise, SecureNoise
from fedprune.privacy.policy import PrivacyPolicy
from fedprune.seeding import derive_seed
from fedprune.training.dp_sgd import train_dp_sgd
from fedprune.training.loops import train_sgd

__all__ = [
    "RoundResult",
    "mask_due",
    "new_ledger",
    "noise_source",
    "round_epochs",
    "round_plan",
    "steps_for",
    "train_round",
]


@dataclass(frozen=True)
class RoundResult:
    """What one :func:`train_round` did.

    Attributes
    ----------
    plan:
        The DP-SGD mechanism of the round (``None`` when non-private).
    steps:
        Optimizer steps taken (DP-SGD steps, or SGD mini-batches when non-private).
    epsilon:
        The holder's ledger after the round (``None`` when non-private: nothing is claimed).
    trained_coordinates:
        Coordinates the mask selects (those the round could move).
    """

    plan: DPPlan | None
    steps: int
    epsilon: float | None
    trained_coordinates: int


def steps_for(*, num_examples: int, batch_size: int, epochs: int) -> tuple[float, int]:
    """``(sample_rate, steps)`` for ``epochs`` passes of Poisson batches of expected size
    ``batch_size`` over ``num_examples`` records (``sample_rate = min(1, batch_size / n)``)."""
    if num_examples < 1:
        raise ValueError(f"expected num_examples >= 1, got {num_examples}")
    sample_rate = min(1.0, batch_size / num_examples)
    return sample_rate, max(1, math.ceil(epochs / sample_rate))


def round_epochs(config: RunConfig, *, federated: bool) -> list[int]:
    """Epochs of each round of a run, in order.

    Federated: ``federated.num-rounds`` rounds of ``federated.local-epochs``. Centralised:
    ``[optim.epochs]`` in ``freeze`` mode, else rounds of ``mask.select-every`` epochs (the
    last one shorter when ``optim.epochs`` is not a multiple).
    """
    if federated:
        return [config.federated.local_epochs] * config.federated.num_rounds
    total = config.optim.epochs
    if config.mask.mode == "freeze":
        return [total]
    k = config.mask.select_every
    return [min(k, total - start) for start in range(0, total, k)]


def mask_due(mask: MaskConfig, server_round: int, *, epochs_per_round: int = 1) -> bool:
    """Whether a (new) mask is picked before round ``server_round`` (rounds count from 1).

    ``freeze``: only before round 1. ``select``: before every round whose first epoch starts at
    or just after a multiple of ``mask.select-every`` epochs, i.e. every
    ``ceil(select_every / epochs_per_round)`` rounds.
    """
    if server_round < 1:
        raise ValueError(f"expected server_round >= 1, got {server_round}")
    if epochs_per_round < 1:
        raise ValueError(f"expected epochs_per_round >= 1, got {epochs_per_round}")
    if mask.mode == "freeze":
        return server_round == 1
    every = math.ceil(mask.select_every / epochs_per_round)
    return (server_round - 1) % every == 0


def round_plan(
    privacy: PrivacyConfig, *, sample_rate: float, round_steps: tuple[int, ...], round_index: int
) -> DPPlan:
    """The plan of round ``round_index`` (from 0) of a holder that takes ``round_steps[i]``
    steps in round ``i``: a fixed ``noise_multiplier`` if set, else calibrated so that all
    ``sum(round_steps)`` steps spend exactly up to ``target_epsilon``.
    """
    total = sum(round_steps)
    sigma = (
        privacy.noise_multiplier
        if privacy.noise_multiplier > 0
        else _calibrated_sigma(privacy, sample_rate=sample_rate, total_steps=total)
    )
    return DPPlan(
        noise_multiplier=sigma,
        max_grad_norm=privacy.max_grad_norm,
        sample_rate=sample_rate,
        steps=round_steps[round_index],
        delta=privacy.delta,
        accountant=privacy.accountant,
    )


@functools.lru_cache(maxsize=32)
def _calibrated_sigma(privacy: PrivacyConfig, *, sample_rate: float, total_steps: int) -> float:
    """The noise multiplier at which ``total_steps`` steps at ``sample_rate`` spend
    ``privacy.target_epsilon``.

    Cached per process, and keyed without the round: the calibration (a search over the
    accountant, seconds) gives the same noise for every round of a holder and for every
    equally sized federated partition, so a client computes it once per run, not per round.
    """
    return DPPlan.calibrate(
        target_epsilon=privacy.target_epsilon,
        delta=privacy.delta,
        sample_rate=sample_rate,
        steps=total_steps,
        max_grad_norm=privacy.max_grad_norm,
        accountant=privacy.accountant,
    ).noise_multiplier


def new_ledger(privacy: PrivacyConfig) -> PrivacyLedger:
    """An empty in-memory ledger with the run's accountant, delta and budget."""
    return PrivacyLedger(
        accountant=privacy.accountant, delta=privacy.delta, max_epsilon=privacy.max_epsilon
    )


def noise_source(*, reproducible: bool, seed: int, holder: int, round_index: int) -> NoiseSource:
    """The holder's noise for a round: :class:`SecureNoise` unless it opted into reproducible
    noise (a research/debug mode, logged loudly, derived from ``seed``, holder and round)."""
    if reproducible:
        return ReproducibleNoise(derive_seed(seed, "noise", holder, round_index))
    return SecureNoise()


def train_round(
    model: nn.Module,
    dataset: Dataset,
    *,
    config: RunConfig,
    mask: ParameterMask,
    rounds: list[int],
    round_index: int,
    ledger: PrivacyLedger | None,
    holder: int,
    noise: NoiseSource | None = None,
    policy: PrivacyPolicy | None = None,
    progress: bool = False,
) -> RoundResult:
    """Train ``model`` (in place) on a holder's private ``dataset`` for round ``round_index``.

    Parameters
    ----------
    mask:
        The round's coordinates (from public data or randomness only; never from ``dataset``).
    rounds:
        Epochs of every round the holder plans (:func:`round_epochs`); the noise is calibrated
        so that all of them together spend ``config.privacy.target_epsilon``.
    round_index:
        Which of ``rounds`` this is (from 0).
    ledger:
        The holder's ledger (required when private): checked before any step, then one entry
        per step; a refused round raises :class:`fedprune.privacy.PrivacyBudgetExceededError`
        and changes nothing.
    holder:
        The holder's id (a client's partition id; 0 for a centralised run), for seeds.
    noise:
        The DP noise source; ``None`` is :class:`~fedprune.privacy.noise.SecureNoise` (never
        reproducible from anything in ``config``).
    policy:
        The holder's policy: a round whose noise multiplier is below its floor is refused
        (:class:`~fedprune.privacy.policy.PolicyRefusalError`) before any step.

    Formal guarantees
    -----------------
    As :func:`fedprune.training.dp_sgd.train_dp_sgd`: record-level DP of ``dataset`` as the
    ledger reports, provided ``mask`` is independent of ``dataset``; coordinates outside
    ``mask`` stay bit-identical (private and non-private alike).
    """
    n = len(dataset)  # type: ignore[arg-type]
    batch = config.optim.batch_size
    epochs = rounds[round_index]
    trained = mask.num_selected
    if not config.privacy.enabled:
        with _masked_gradients(model, mask):
            train_sgd(
                model,
                dataset,
                epochs=epochs,
                lr=config.optim.lr,
                batch_size=batch,
                momentum=config.optim.momentum,
                seed=derive_seed(config.seed, "train", holder, round_index),
                progress=progress,
                desc="sgd (non-private)",
            )
        return RoundResult(
            plan=None,
            steps=epochs * math.ceil(n / batch),
            epsilon=None,
            trained_coordinates=trained,
        )
    if ledger is None:
        raise ValueError("a private round needs the holder's privacy ledger")
    sample_rate, _ = steps_for(num_examples=n, batch_size=batch, epochs=1)
    steps = tuple(steps_for(num_examples=n, batch_size=batch, epochs=e)[1] for e in rounds)
    plan = round_plan(
        config.privacy, sample_rate=sample_rate, round_steps=steps, round_index=round_index
    )
    if policy is not None:
        policy.check_noise(plan.noise_multiplier)
    result = train_dp_sgd(
        model,
        dataset,
        plan=plan,
        lr=config.optim.lr,
        momentum=config.optim.momentum,
        mask=mask,
        ledger=ledger,
        noise=noise,
        progress=progress,
    )
    return RoundResult(
        plan=plan, steps=plan.steps, epsilon=result.epsilon, trained_coordinates=trained
    )


@contextmanager
def _masked_gradients(model: nn.Module, mask: ParameterMask) -> Iterator[None]:
    """While active, every gradient of ``model`` is zero outside ``mask``.

    ``train_sgd``'s SGD (no weight decay; momentum buffers only ever receive zeros there) then
    moves only the selected coordinates, as masked DP-SGD does.
    """
    params = dict(model.named_parameters())
    handles = [
        params[name].register_hook(lambda grad, keep=keep: grad * keep.to(grad.device))
        for name, keep in mask.items()
        if params[name].requires_grad
    ]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()
