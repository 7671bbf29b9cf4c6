"""The fedprune ClientApp: local masked DP-SGD on the node's partition, behind SecAgg+.

The handler only unpacks the server's message, calls
:func:`fedprune.federated.run_client_round`, persists the privacy ledger and packs the reply.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

import numpy as np
from flwr.app import ConfigRecord, Context, Message
from flwr.clientapp import ClientApp

from fedprune.config import RunConfig
from fedprune.federated import run_client_round
from fedprune.federated.client_round import new_ledger
from fedprune.federated.protocol import CONFIG_MASK, CONFIG_ROUND, CONFIG_RUN
from fedprune.masks import ParameterMask
from fedprune.privacy import PrivacyLedger
from server.legacy import RECORD_KEY_CONFIGS, NumPyClient, secaggplus_mod

__all__ = ["app", "client_fn"]

logger = logging.getLogger(__name__)

_LEDGER_RECORD = "privacy-ledger"


class MaskedDPClient(NumPyClient):
    """A NumPyClient (the reply shape SecAgg+ needs) for one node's partition."""

    def __init__(self, context: Context) -> None:
        self.context = context
        self.partition_id = int(context.node_config["partition-id"])
        self.num_partitions = int(context.node_config["num-partitions"])

    def fit(
        self, parameters: list[np.ndarray], config: dict[str, Any]
    ) -> tuple[list[np.ndarray], int, dict[str, Any]]:
        """Train locally; return ``[update]`` (selected coordinates only), weight, metrics."""
        run_config = RunConfig.from_flat(json.loads(str(config[CONFIG_RUN])))
        mask = ParameterMask.from_bytes(bytes(config[CONFIG_MASK]))  # type: ignore[arg-type]
        ledger = self._load_ledger(run_config)
        try:
            result = run_client_round(
                run_config,
                partition_id=self.partition_id,
                num_partitions=self.num_partitions,
                global_arrays=parameters,
                mask=mask,
                ledger=ledger,
                server_round=int(config[CONFIG_ROUND]),
            )
        finally:
            # Steps already taken are recorded even if training failed part-way.
            self._save_ledger(run_config, ledger)
        return [result.update], result.num_examples, dict(result.metrics)

    # -- ledger persistence: on disk when privacy.ledger-dir is set, else in context.state --

    def _ledger_path(self, config: RunConfig) -> Path | None:
        directory = config.privacy.ledger_dir
        return Path(directory) / f"client-{self.partition_id}.json" if directory else None

    def _load_ledger(self, config: RunConfig) -> PrivacyLedger:
        """The node's ledger; its budget is the tighter of the stored one, the run config's and
        the node's own ``max-epsilon`` (``--node-config``), so a server cannot raise it."""
        path = self._ledger_path(config)
        record = self.context.state.config_records.get(_LEDGER_RECORD)
        if path is not None and path.exists():
            ledger = PrivacyLedger.load(path)
        elif path is None and record is not None:
            ledger = PrivacyLedger.from_json(bytes(record["json"]))  # type: ignore[arg-type]
        else:
            ledger = new_ledger(config)
        node_budget = float(self.context.node_config.get("max-epsilon", math.inf))
        ledger.max_epsilon = min(ledger.max_epsilon, config.privacy.max_epsilon, node_budget)
        return ledger

    def _save_ledger(self, config: RunConfig, ledger: PrivacyLedger) -> None:
        path = self._ledger_path(config)
        if path is not None:
            ledger.save(path)
        else:
            self.context.state.config_records[_LEDGER_RECORD] = ConfigRecord(
                {"json": ledger.to_json().encode()}
            )


def client_fn(context: Context) -> Any:
    """Flower's client factory."""
    return MaskedDPClient(context).to_client()


def optional_secaggplus_mod(msg: Message, context: Context, call_next: Any) -> Message:
    """Run ``secaggplus_mod`` for SecAgg+ rounds; pass plain rounds straight to the client.

    ``secaggplus_mod`` rejects train messages that carry no SecAgg+ configuration, so the same
    ClientApp could not otherwise serve runs with ``secagg.enabled = false``.
    """
    if RECORD_KEY_CONFIGS not in msg.content.config_records:
        return call_next(msg, context)
    return secaggplus_mod(msg, context, call_next)


app = ClientApp(client_fn=client_fn, mods=[optional_secaggplus_mod])
