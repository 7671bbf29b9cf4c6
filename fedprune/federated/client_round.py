"""One client's federated round: masked DP-SGD on its records, upload of the selected update."""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass

import numpy as np

from fedprune.config import RunConfig
from fedprune.federated.client_data import (
    ClientData,
    PartitionData,
    check_partitions,
    client_partition,
    ledger_holder,
)
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
from fedprune.pipeline import build_model_for
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


def run_client_round(
    config: RunConfig,
    *,
    partition_id: int | None = None,
    num_partitions: int | None = None,
    data: ClientData | None = None,
    global_arrays: list[np.ndarray],
    mask: ParameterMask,
    server_round: int,
    policy: PrivacyPolicy,
    store: LedgerStore | None = None,
) -> ClientRoundResult:
    """Round ``server_round`` of the recipe on this client's records; return the update.

    The records are ``data`` (:mod:`fedprune.federated.client_data`: a partition of the run's
    dataset, or a directory of the node's own records), or partition ``partition_id`` of
    ``num_partitions`` -- give one or the other. Either way the client accounts for *its* ``n``
    records (sample rate, the delta check) under its own ledger name.

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
    source = _client_data(data, partition_id, num_partitions)
    client_id = source.client_id
    records = source.load(config)
    task = source.task(config)
    model = build_model_for(config, input_shape=task.input_shape, num_classes=task.num_classes)
    arrays_to_model(model, global_arrays)
    try:
        mask.validate_for(model)
    except MaskError as err:
        return refused_round(
            partition_id=client_id,
            reason=f"the server's mask does not fit the model: {err}",
            num_selected=mask.num_selected,
            policy=policy,
        )
    before = mask.gather(dict(model.named_parameters()))
    rounds = round_epochs(config, federated=True)
    if not 1 <= server_round <= len(rounds):
        raise ValueError(f"expected server_round in [1, {len(rounds)}], got {server_round}")
    n = len(records)
    metrics = _base_metrics(client_id, policy)
    store = store if store is not None else LedgerStore(policy.ledger_path)
    holder = source.ledger_holder(config)
    ledger: PrivacyLedger | None = None
    try:
        if config.secagg.enabled:
            _check_secagg_weight(n, config)
        privacy = policy.resolve(config.privacy)
        if privacy.enabled:
            _check_delta(privacy.delta, n, source.describe())
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
                records.dataset,
                config=dataclasses.replace(config, privacy=privacy),
                mask=mask,
                rounds=rounds,
                round_index=server_round - 1,
                ledger=ledger,
                holder=client_id,
                noise=noise_source(
                    reproducible=policy.reproducible_noise,
                    seed=config.seed,
                    holder=client_id,
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
        logger.warning("client %d refuses round %d: %s", client_id, server_round, err)
        return refused_round(
            partition_id=client_id,
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


def _client_data(
    data: ClientData | None, partition_id: int | None, num_partitions: int | None
) -> ClientData:
    """``data``, or the partition ``partition_id`` of ``num_partitions`` (exactly one given)."""
    if data is not None:
        if partition_id is not None or num_partitions is not None:
            raise ValueError("give data or partition_id and num_partitions, not both")
        return data
    if partition_id is None or num_partitions is None:
        raise ValueError("expected data, or partition_id and num_partitions")
    return PartitionData(partition_id=partition_id, num_partitions=num_partitions)


def _check_delta(delta: float, n: int, holder: str) -> None:
    try:
        check_delta(delta, n, holder=holder)
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
