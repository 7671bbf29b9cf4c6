"""One client's federated round: masked DP-SGD on its partition, upload of the selected update."""

from __future__ import annotations

import dataclasses
import functools
import logging
import time
from dataclasses import dataclass

import numpy as np

from fedprune.config import DataConfig, RunConfig
from fedprune.data import PrivateDataset, PublicPrivateSplit, client_dataset, partition_indices
from fedprune.federated.protocol import (
    METRIC_ACCOUNTANT,
    METRIC_DELTA,
    METRIC_EPSILON,
    METRIC_FIT_S,
    METRIC_NOISE,
    METRIC_NOISE_MULTIPLIER,
    METRIC_PARTITION_ID,
    METRIC_REFUSED,
    METRIC_ROUND_STEPS,
    METRIC_SAMPLE_RATE,
    METRIC_SECAGG_CLIPPED,
    METRIC_STEPS,
    METRIC_TRAIN_S,
    arrays_to_model,
)
from fedprune.masks import MaskError, ParameterMask
from fedprune.pipeline import build_model, load_split
from fedprune.privacy import PrivacyBudgetExceededError, PrivacyLedger
from fedprune.privacy.accounting import check_delta
from fedprune.privacy.ledger_store import LedgerIntegrityError, LedgerStore
from fedprune.privacy.policy import PolicyRefusalError, PrivacyPolicy
from fedprune.training.recipe import noise_source, round_epochs, train_round

__all__ = [
    "ClientRoundResult",
    "check_partitions",
    "client_partition",
    "ledger_holder",
    "refused_round",
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


def check_partitions(config: RunConfig) -> None:
    """Check that the private split gives each of ``federated.num_clients`` clients records.

    Launchers call this before starting any client, so that a run asking for more clients than
    there are records fails at once, naming the setting, instead of in every client.

    Raises
    ------
    ValueError
        Naming ``federated.num-clients`` and why the partition is impossible.
    """
    n = config.federated.num_clients
    data = config.data
    try:
        partition_indices(
            _cached_split(data, config.seed).private.labels,
            num_clients=n,
            scheme=data.partition,
            seed=config.seed,
            alpha=data.dirichlet_alpha,
            shards_per_client=data.shards_per_client,
        )
    except ValueError as err:
        raise ValueError(f"config federated.num-clients={n}: {err}") from None


def ledger_holder(config: RunConfig, partition_id: int) -> str:
    """The ledger name of a client's data: one per dataset and partition, not per run, so a
    second run on the same records continues the same ledger."""
    return f"{config.data.dataset}-client-{partition_id}"


def run_client_round(
    config: RunConfig,
    *,
    partition_id: int,
    num_partitions: int,
    global_arrays: list[np.ndarray],
    mask: ParameterMask,
    server_round: int,
    policy: PrivacyPolicy,
    store: LedgerStore | None = None,
) -> ClientRoundResult:
    """Round ``server_round`` of the recipe on this client's partition; return the update.

    The client is the privacy authority. ``config`` is the run's (server-chosen) config; its
    privacy section is only a request, resolved against the client's own ``policy``
    (:meth:`PrivacyPolicy.resolve`). The client's ledger lives in ``store`` (default: the
    policy's ledger directory), persisted after every round. The client **refuses** -- before
    any step, replying with a zero update, weight 0 and the reason in
    ``metrics[METRIC_REFUSED]`` -- when the server's mask does not fit the model, when the
    request is weaker than its policy, when delta is not
    below ``1/n`` for its ``n`` records, when the round's noise is below its floor, when the
    round would take its ledger past its budget, or when its ledger fails its integrity check.

    Otherwise it runs :func:`fedprune.training.recipe.train_round` (the same local steps a
    centralised run takes) for ``federated.local_epochs`` epochs, its noise calibrated so that
    taking part in all ``federated.num_rounds`` rounds spends ``privacy.target_epsilon``, with
    noise from a secure source unless the *policy* opts into reproducible noise.

    Privacy: ``mask`` comes from the server, which chose it from public data only; the private
    partition is touched only by the recipe, and only the selected coordinates move.

    A trained round's metrics also carry its wall times (``METRIC_TRAIN_S``, ``METRIC_FIT_S``),
    for benchmarks; no privacy decision reads them.
    """
    started = time.perf_counter()
    data = client_partition(
        config.data, seed=config.seed, partition_id=partition_id, num_partitions=num_partitions
    )
    model = build_model(config, _cached_split(config.data, config.seed))
    arrays_to_model(model, global_arrays)
    try:
        mask.validate_for(model)
    except MaskError as err:
        return refused_round(
            partition_id=partition_id,
            reason=f"the server's mask does not fit the model: {err}",
            num_selected=mask.num_selected,
            policy=policy,
        )
    before = mask.gather(dict(model.named_parameters()))
    rounds = round_epochs(config, federated=True)
    if not 1 <= server_round <= len(rounds):
        raise ValueError(f"expected server_round in [1, {len(rounds)}], got {server_round}")
    n = len(data)
    metrics = _base_metrics(partition_id, policy)
    store = store if store is not None else LedgerStore(policy.ledger_path)
    holder = ledger_holder(config, partition_id)
    ledger: PrivacyLedger | None = None
    try:
        if config.secagg.enabled:
            _check_secagg_weight(n, config)
        privacy = policy.resolve(config.privacy)
        if privacy.enabled:
            _check_delta(privacy.delta, n, partition_id)
            ledger = store.open(
                holder,
                accountant=privacy.accountant,
                delta=privacy.delta,
                max_epsilon=privacy.max_epsilon,
            )
        try:
            training = time.perf_counter()
            result = train_round(
                model,
                data.dataset,
                config=dataclasses.replace(config, privacy=privacy),
                mask=mask,
                rounds=rounds,
                round_index=server_round - 1,
                ledger=ledger,
                holder=partition_id,
                noise=noise_source(
                    reproducible=policy.reproducible_noise,
                    seed=config.seed,
                    holder=partition_id,
                    round_index=server_round - 1,
                ),
                policy=policy,
            )
            train_s = time.perf_counter() - training
        finally:
            if ledger is not None:
                # Steps already taken are recorded even if training failed part-way.
                store.save(holder, ledger)
    except (
        PrivacyBudgetExceededError,
        PolicyRefusalError,
        LedgerIntegrityError,
        SecAggWeightError,
    ) as err:
        logger.warning("client %d refuses round %d: %s", partition_id, server_round, err)
        return refused_round(
            partition_id=partition_id,
            reason=str(err),
            num_selected=mask.num_selected,
            policy=policy,
            ledger=ledger,
        )
    metrics[METRIC_ROUND_STEPS] = result.steps
    if result.plan is not None and ledger is not None:
        metrics |= _ledger_metrics(ledger) | {
            METRIC_NOISE_MULTIPLIER: result.plan.noise_multiplier,
            METRIC_SAMPLE_RATE: result.plan.sample_rate,
        }
    after = mask.gather(dict(model.named_parameters()))
    update = (after - before).detach().numpy().astype(np.float32)
    if config.secagg.enabled:
        metrics[METRIC_SECAGG_CLIPPED] = secagg_clipped(update, num_examples=n, config=config)
    metrics[METRIC_TRAIN_S] = train_s
    metrics[METRIC_FIT_S] = time.perf_counter() - started
    return ClientRoundResult(update=update, num_examples=n, metrics=metrics)


def refused_round(
    *,
    partition_id: int,
    reason: str,
    num_selected: int,
    policy: PrivacyPolicy,
    ledger: PrivacyLedger | None = None,
) -> ClientRoundResult:
    """The reply of a client that took no step this round: a zero update of ``num_selected``
    values (0 when the mask could not even be read), weight 0, ``reason`` in
    ``metrics[METRIC_REFUSED]``, and the ledger's figures when it was opened."""
    metrics = _base_metrics(partition_id, policy) | {METRIC_REFUSED: reason, METRIC_ROUND_STEPS: 0}
    if ledger is not None:
        metrics |= _ledger_metrics(ledger)
    return ClientRoundResult(
        update=np.zeros(num_selected, dtype=np.float32), num_examples=0, metrics=metrics
    )


def _base_metrics(partition_id: int, policy: PrivacyPolicy) -> Metrics:
    return {
        METRIC_PARTITION_ID: partition_id,
        METRIC_REFUSED: "",
        METRIC_NOISE: "reproducible" if policy.reproducible_noise else "secure",
    }


def _check_delta(delta: float, n: int, partition_id: int) -> None:
    try:
        check_delta(delta, n, holder=f"client {partition_id}")
    except ValueError as err:
        raise PolicyRefusalError(str(err)) from None


class SecAggWeightError(ValueError):
    """The client's record count exceeds SecAgg+'s ``max-weight`` (checked before training)."""


def _check_secagg_weight(n: int, config: RunConfig) -> None:
    """SecAgg+ scales by ``n / max_weight``: ``n`` above ``max_weight`` risks overflowing the
    quantised range and clipping, so the client refuses before spending any budget."""
    if n > config.secagg.max_weight:
        raise SecAggWeightError(
            f"client holds {n} records, above secagg.max-weight={config.secagg.max_weight:g}: "
            "SecAgg+ would clip its weighted update; raise secagg.max-weight"
        )


def _ledger_metrics(ledger: PrivacyLedger) -> Metrics:
    return {
        METRIC_EPSILON: ledger.epsilon(),
        METRIC_STEPS: ledger.steps,
        METRIC_DELTA: ledger.delta,
        METRIC_ACCOUNTANT: ledger.accountant,
    }


def secagg_clipped(update: np.ndarray, *, num_examples: int, config: RunConfig) -> int:
    """Number of coordinates SecAgg+ will silently clip.

    SecAgg+ scales a client's vector by ``num_examples / max_weight`` and clips it to
    ``[-clipping_range, clipping_range]`` before quantising; a non-zero count means the
    aggregate will be biased (raise ``secagg.clipping-range`` or ``secagg.max-weight``).
    """
    scaled = np.abs(update) * (num_examples / config.secagg.max_weight)
    return int((scaled > config.secagg.clipping_range).sum())
