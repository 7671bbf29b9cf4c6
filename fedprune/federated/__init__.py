"""Flower-free logic of federated rounds: the message protocol, a client's round, the server step.

The Flower apps in ``clients/`` and ``server/`` only unpack messages, call these functions and
pack the replies.
"""

from fedprune.federated.client_round import ClientRoundResult, run_client_round
from fedprune.federated.protocol import (
    METRIC_ACCOUNTANT,
    METRIC_DELTA,
    METRIC_EPSILON,
    METRIC_NOISE_MULTIPLIER,
    METRIC_PARTITION_ID,
    METRIC_REFUSED,
    METRIC_ROUND_STEPS,
    METRIC_SAMPLE_RATE,
    METRIC_STEPS,
    arrays_to_model,
    model_to_arrays,
)
from fedprune.federated.server_step import apply_update, mask_due

__all__ = [
    "METRIC_ACCOUNTANT",
    "METRIC_DELTA",
    "METRIC_EPSILON",
    "METRIC_NOISE_MULTIPLIER",
    "METRIC_PARTITION_ID",
    "METRIC_REFUSED",
    "METRIC_ROUND_STEPS",
    "METRIC_SAMPLE_RATE",
    "METRIC_STEPS",
    "ClientRoundResult",
    "apply_update",
    "arrays_to_model",
    "mask_due",
    "model_to_arrays",
    "run_client_round",
]
