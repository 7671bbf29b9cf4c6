"""One client's federated round: masked DP-SGD on its partition, upload of the selected update."""

from __future__ import annotations

import functools
import logging
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
from torch import nn

from fedprune.config import DataConfig, PrivacyConfig, RunConfig
from fedprune.data import PrivateDataset, PublicPrivateSplit, client_dataset, partition_indices
from fedprune.federated.protocol import (
    METRIC_ACCOUNTANT,
    METRIC_DELTA,
    METRIC_EPSILON,
    METRIC_NOISE_MULTIPLIER,
    METRIC_PARTITION_ID,
    METRIC_REFUSED,
    METRIC_ROUND_STEPS,
    METRIC_SAMPLE_RATE,
    METRIC_SECAGG_CLIPPED,
    METRIC_STEPS,
    arrays_to_model,
)
from fedprune.masks import ParameterMask
from fedprune.pipeline import build_model, load_split, make_plan, steps_for
from fedprune.privacy import (
    DPPlan,
    PrivacyBudgetExceededError,
    PrivacyLedger,
    ReproducibleNoise,
    SecureNoise,
)
from fedprune.training import train_dp_sgd, train_sgd

__all__ = [
    "ClientRoundResult",
    "client_partition",
    "new_ledger",
    "run_client_round",
    "secagg_clipped",
]

logger = logging.getLogger(__name__)

Metrics = dict[str, int | float | str]


@dataclass(frozen=True)
class ClientRoundResult:
    """What a client sends back for one round.

    Attributes
    ----------
    update:
        float32 ``(mask.num_selected,)``: new minus old value of every selected coordinate, in
        :meth:`ParameterMask.gather` order (zeros when the client refused). Upload size scales
        with the density; this is the vector SecAgg+ sums.
    num_examples:
        Weight of the update in the average: the partition size, or 0 when refused.
    metrics:
        The ``METRIC_*`` values (epsilon, delta, noise multiplier, sample rate, steps,
        accountant, refusal reason): visible to the server in plaintext.
    """

    update: np.ndarray
    num_examples: int
    metrics: Metrics


def new_ledger(config: RunConfig) -> PrivacyLedger:
    """An empty ledger with the run's accountant, delta and hard budget."""
    p = config.privacy
    return PrivacyLedger(accountant=p.accountant, delta=p.delta, max_epsilon=p.max_epsilon)


@functools.lru_cache(maxsize=4)
def _cached_split(data: DataConfig, seed: int) -> PublicPrivateSplit:
    return load_split(data, seed=seed)


@functools.lru_cache(maxsize=8)
def client_partition(
    data: DataConfig, *, seed: int, partition_id: int, num_partitions: int
) -> PrivateDataset:
    """Client ``partition_id``'s share of the private split (cached per process).

    Every client derives the same split and partition from the run config, so the partitions
    are disjoint and cover the private set.
    """
    if not 0 <= partition_id < num_partitions:
        raise ValueError(f"expected partition_id in [0, {num_partitions}), got {partition_id}")
    private = _cached_split(data, seed).private
    parts = partition_indices(
        private.labels,
        num_clients=num_partitions,
        scheme=data.partition,
        seed=seed,
        alpha=data.dirichlet_alpha,
        shards_per_client=data.shards_per_client,
    )
    return client_dataset(private, parts[partition_id])


def run_client_round(
    config: RunConfig,
    *,
    partition_id: int,
    num_partitions: int,
    global_arrays: list[np.ndarray],
    mask: ParameterMask,
    ledger: PrivacyLedger,
    server_round: int,
) -> ClientRoundResult:
    """Train the global model locally for ``federated.local_epochs`` and return the update.

    The noise multiplier is calibrated so that a client taking part in all
    ``federated.num_rounds`` rounds spends ``privacy.target_epsilon`` in total. ``ledger`` (the
    client's own, persisted by the caller) records every step; if this round would take it past
    ``privacy.max_epsilon`` the client refuses *before* any step: zero update, weight 0, and the
    reason in ``metrics[METRIC_REFUSED]``.

    Privacy: ``mask`` comes from the server, which chose it from public data only; the private
    partition is touched only by DP-SGD (or by plain SGD when ``privacy.enabled`` is false, a
    non-private baseline). Either way only the selected coordinates are trained.
    """
    data = client_partition(
        config.data, seed=config.seed, partition_id=partition_id, num_partitions=num_partitions
    )
    model = build_model(config, _cached_split(config.data, config.seed))
    arrays_to_model(model, global_arrays)
    mask.validate_for(model)
    before = mask.gather(dict(model.named_parameters()))
    n = len(data)
    sample_rate, round_steps = steps_for(
        num_examples=n, batch_size=config.optim.batch_size, epochs=config.federated.local_epochs
    )
    metrics: Metrics = {METRIC_PARTITION_ID: partition_id, METRIC_REFUSED: ""}
    seed = (
        secrets.randbits(63)
        if config.privacy.secure_noise
        else config.seed * 1_000_003 + partition_id * 1_009 + server_round
    )
    if not config.privacy.enabled:
        with _masked_gradients(model, mask):
            train_sgd(
                model,
                data.dataset,
                epochs=config.federated.local_epochs,
                lr=config.optim.lr,
                batch_size=config.optim.batch_size,
                momentum=config.optim.momentum,
                seed=seed,
            )
    else:
        plan = _round_plan(
            config.privacy,
            sample_rate=sample_rate,
            round_steps=round_steps,
            num_rounds=config.federated.num_rounds,
        )
        metrics |= {
            METRIC_NOISE_MULTIPLIER: plan.noise_multiplier,
            METRIC_SAMPLE_RATE: plan.sample_rate,
            METRIC_DELTA: plan.delta,
            METRIC_ACCOUNTANT: plan.accountant,
        }
        try:
            trained = train_dp_sgd(
                model,
                data.dataset,
                plan=plan,
                lr=config.optim.lr,
                momentum=config.optim.momentum,
                mask=mask,
                ledger=ledger,
                noise=SecureNoise() if config.privacy.secure_noise else ReproducibleNoise(seed),
            )
        except PrivacyBudgetExceededError as err:
            logger.warning("client %d refuses round %d: %s", partition_id, server_round, err)
            metrics |= {
                METRIC_EPSILON: ledger.epsilon(),
                METRIC_STEPS: ledger.steps,
                METRIC_REFUSED: str(err),
                METRIC_ROUND_STEPS: 0,
            }
            return ClientRoundResult(
                update=np.zeros(mask.num_selected, dtype=np.float32),
                num_examples=0,
                metrics=metrics,
            )
        metrics |= {
            METRIC_EPSILON: trained.epsilon,
            METRIC_STEPS: ledger.steps,
            METRIC_ROUND_STEPS: round_steps,
        }
    after = mask.gather(dict(model.named_parameters()))
    update = (after - before).detach().numpy().astype(np.float32)
    if config.secagg.enabled:
        metrics[METRIC_SECAGG_CLIPPED] = secagg_clipped(update, num_examples=n, config=config)
    return ClientRoundResult(update=update, num_examples=n, metrics=metrics)


def secagg_clipped(update: np.ndarray, *, num_examples: int, config: RunConfig) -> int:
    """Number of coordinates SecAgg+ will silently clip.

    SecAgg+ scales a client's vector by ``num_examples / max_weight`` and clips it to
    ``[-clipping_range, clipping_range]`` before quantising; a non-zero count means the
    aggregate will be biased (raise ``secagg.clipping-range`` or ``secagg.max-weight``).
    """
    scaled = np.abs(update) * (num_examples / config.secagg.max_weight)
    return int((scaled > config.secagg.clipping_range).sum())


@functools.lru_cache(maxsize=16)
def _round_plan(
    privacy: PrivacyConfig, *, sample_rate: float, round_steps: int, num_rounds: int
) -> DPPlan:
    """One round's plan, its noise calibrated for ``num_rounds`` such rounds.

    Cached: the calibration (a search over the accountant, seconds) gives the same plan in every
    round of a client and for every equally sized partition served by one process.
    """
    total = make_plan(privacy, sample_rate=sample_rate, steps=round_steps * num_rounds)
    return total.replace(steps=round_steps)


@contextmanager
def _masked_gradients(model: nn.Module, mask: ParameterMask) -> Iterator[None]:
    """While active, every gradient of ``model`` is zero outside ``mask``.

    ``train_sgd``'s SGD (no weight decay; momentum buffers only ever receive zeros there) then
    moves only the selected coordinates, as masked DP-SGD does: the non-private baseline trains
    the coordinates the server will apply, on the model the server holds everywhere else.
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
