"""The fedprune ClientApp: local masked DP-SGD on the node's records, behind SecAgg+.

The handler reads the run's settings from ``context.run_config`` and, from
``context.node_config``, the node's records (``partition-id`` of the run's dataset, or
``data-dir``: its own, see :mod:`fedprune.federated.client_data`) and its own privacy policy;
it unpacks the mask, calls
:func:`fedprune.federated.run_client_round` and packs the reply. The policy never comes from a
server message: the node (or the launcher that owns simulated nodes) sets it.

Under the Deployment Engine a SuperNode starts a fresh ClientApp process for every message, and
three of a SecAgg+ round's four messages are key exchange and unmasking, answered by
``secaggplus_mod`` alone. So this module imports only Flower and numpy; torch, Opacus and the
core are imported when a node actually trains (:meth:`MaskedDPClient.fit`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
from flwr.app import Context, Message
from flwr.clientapp import ClientApp

from clients.legacy import RECORD_KEY_CONFIGS, NumPyClient, secaggplus_mod

if TYPE_CHECKING:
    from fedprune.config import RunConfig
    from fedprune.federated.client_data import ClientData
    from fedprune.masks import ParameterMask
    from fedprune.privacy.policy import PrivacyPolicy

__all__ = ["app", "make_client_app"]

logger = logging.getLogger(__name__)


class MaskedDPClient(NumPyClient):
    """A NumPyClient (the reply shape SecAgg+ needs) for one node's records."""

    def __init__(
        self,
        context: Context,
        *,
        run_config: Mapping[str, Any] | None = None,
        node_config: Mapping[str, Any] | None = None,
    ) -> None:
        # An in-process launcher's settings: its run config over ``context.run_config``; its
        # node settings under the node's own (a node's own config wins).
        self.run_config = {**dict(context.run_config), **dict(run_config or {})}
        self.node_config = {**dict(node_config or {}), **dict(context.node_config)}

    @property
    def config(self) -> RunConfig:
        """The run's settings (``context.run_config``, under a launcher's)."""
        from fedprune.config import RunConfig

        return RunConfig.from_flat(self.run_config)

    @property
    def data(self) -> ClientData:
        """The node's records: ``partition-id`` or ``data-dir`` of its node config."""
        from fedprune.federated.client_data import node_data

        return node_data(self.node_config)

    @property
    def policy(self) -> PrivacyPolicy:
        """The node's own privacy policy (its node config; never from the server)."""
        from fedprune.privacy.policy import PrivacyPolicy

        return PrivacyPolicy.from_node_config(self.node_config)

    def fit(
        self, parameters: list[np.ndarray], config: dict[str, Any]
    ) -> tuple[list[np.ndarray], int, dict[str, Any]]:
        """Train locally; return ``[update]`` (selected coordinates only), weight, metrics.

        A missing or unreadable mask is refused (empty update, weight 0, the reason), not raised:
        the node took no step and says why.
        """
        from fedprune.federated import run_client_round
        from fedprune.federated.client_round import refused_round
        from fedprune.federated.protocol import CONFIG_MASK, CONFIG_ROUND
        from fedprune.masks import MaskError

        data = self.data
        try:
            mask = _decode_mask(config.get(CONFIG_MASK))
        except MaskError as err:
            logger.warning("%s refuses the round: %s", data.describe(), err)
            result = refused_round(
                partition_id=data.client_id,
                reason=f"unreadable mask from the server: {err}",
                num_selected=0,
                policy=self.policy,
            )
            return [result.update], result.num_examples, dict(result.metrics)
        result = run_client_round(
            self.config,
            data=data,
            global_arrays=parameters,
            mask=mask,
            server_round=int(config[CONFIG_ROUND]),
            policy=self.policy,
        )
        return [result.update], result.num_examples, dict(result.metrics)


def _decode_mask(value: object) -> ParameterMask:
    """The round's mask from the fit config value (``bytes`` from ``ParameterMask.to_bytes``)."""
    from fedprune.masks import MaskError, ParameterMask

    if not isinstance(value, bytes | bytearray):
        raise MaskError(f"expected the mask as bytes, got {type(value).__name__}")
    return ParameterMask.from_bytes(value)


def client_fn(context: Context) -> Any:
    """Flower's client factory."""
    return MaskedDPClient(context).to_client()


def _launcher_client_fn(run_config: Mapping[str, Any], node_config: Mapping[str, Any]) -> Any:
    def launcher_client_fn(context: Context) -> Any:
        return MaskedDPClient(context, run_config=run_config, node_config=node_config).to_client()

    return launcher_client_fn


def optional_secaggplus_mod(msg: Message, context: Context, call_next: Any) -> Message:
    """Run ``secaggplus_mod`` for SecAgg+ rounds; pass plain rounds straight to the client.

    ``secaggplus_mod`` rejects train messages that carry no SecAgg+ configuration, so the same
    ClientApp could not otherwise serve runs with ``secagg.enabled = false``.
    """
    if RECORD_KEY_CONFIGS not in msg.content.config_records:
        return call_next(msg, context)
    return secaggplus_mod(msg, context, call_next)


def make_client_app(
    *,
    run_config: Mapping[str, Any] | None = None,
    node_config: Mapping[str, Any] | None = None,
) -> ClientApp:
    """The ClientApp; in-process launchers pass what ``flwr run`` would have put in the context.

    ``run_config`` stands in for ``context.run_config`` (Flower's in-process ``run_simulation``
    leaves it empty); ``node_config`` adds the simulated nodes' own settings (their privacy
    policy) under ``context.node_config`` -- the launcher owns its simulated nodes, as a
    SuperNode's operator owns its ``--node-config``. Both go to the client directly: Flower
    refuses a context whose ``run_config`` was modified (the node's reply would be lost).
    """
    mods = [optional_secaggplus_mod]
    if run_config is None and node_config is None:
        return ClientApp(client_fn=client_fn, mods=mods)
    factory = _launcher_client_fn(dict(run_config or {}), dict(node_config or {}))
    return ClientApp(client_fn=factory, mods=mods)


app = make_client_app()
