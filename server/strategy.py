"""``MaskedDPFedAvg``: Flower's hooks, translated into calls on :class:`FederatedServer`.

One strategy serves both aggregation paths. With SecAgg+ the workflow has already summed the
clients' masked vectors and hands every ``FitRes`` the same weighted average (the server never
sees an individual update); without it, the server computes that weighted average itself.
"""

from __future__ import annotations

import logging

import numpy as np

from fedprune.federated import ClientReply, FederatedServer, model_to_arrays
from fedprune.federated.protocol import CONFIG_MASK, CONFIG_ROUND
from server.legacy import (
    ClientManager,
    ClientProxy,
    FedAvg,
    FitIns,
    FitRes,
    Parameters,
    Scalar,
    ndarrays_to_parameters,
    parameters_to_ndarrays,
)

__all__ = ["CONNECT_TIMEOUT_S", "MaskedDPFedAvg"]

logger = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 60
"""How long the first round waits for all expected clients to connect."""


class MaskedDPFedAvg(FedAvg):
    """Federated averaging of masked DP-SGD updates on the server-held global model.

    Rounds are numbered as the run's (``server_round`` plus the rounds a resumed checkpoint
    had already completed). See :class:`fedprune.federated.FederatedServer` for the privacy
    notes: masks come from public data only; client metrics are plaintext even under SecAgg+.
    """

    def __init__(self, server: FederatedServer) -> None:
        n = server.config.federated.num_clients
        least = min(n, server.config.federated.min_clients)
        super().__init__(
            fraction_fit=1.0,
            fraction_evaluate=0.0,
            min_fit_clients=least,
            min_available_clients=least,
            accept_failures=True,
        )
        self.server = server

    def initialize_parameters(self, client_manager: ClientManager) -> Parameters | None:
        """The warm-started (or resumed) global model."""
        return ndarrays_to_parameters(model_to_arrays(self.server.model))

    def configure_fit(
        self, server_round: int, parameters: Parameters, client_manager: ClientManager
    ) -> list[tuple[ClientProxy, FitIns]]:
        """Send the model and this round's mask (picked from public data when due) to all."""
        run_round = server_round + self.server.done
        mask = self.server.mask_for_round(run_round)
        fit_config: dict[str, Scalar] = {CONFIG_ROUND: run_round, CONFIG_MASK: mask.to_bytes()}
        return [
            (c, FitIns(parameters, dict(fit_config))) for c in self._participants(client_manager)
        ]

    def aggregate_fit(
        self,
        server_round: int,
        results: list[tuple[ClientProxy, FitRes]],
        failures: list[tuple[ClientProxy, FitRes] | BaseException],
    ) -> tuple[Parameters | None, dict[str, Scalar]]:
        """Apply ``server_lr`` x the weighted mean of the clients' selected-coordinate updates."""
        replies = [
            ClientReply(
                update=_one_vector(parameters_to_ndarrays(res.parameters)),
                num_examples=int(res.num_examples),
                metrics=dict(res.metrics),
            )
            for _, res in results
        ]
        self.server.aggregate(server_round + self.server.done, replies, failures=len(failures))
        return ndarrays_to_parameters(model_to_arrays(self.server.model)), {}

    def evaluate(
        self, server_round: int, parameters: Parameters
    ) -> tuple[float, dict[str, Scalar]] | None:
        """Central evaluation on the test set; records and checkpoints the round."""
        if server_round == 0:
            return None
        loss, accuracy = self.server.evaluate_round(server_round + self.server.done)
        return loss, {"accuracy": accuracy}

    def _participants(self, client_manager: ClientManager) -> list[ClientProxy]:
        """Every connected client (at least ``federated.min_clients``).

        Waits up to ``CONNECT_TIMEOUT_S`` for the ``federated.num_clients`` the config expects
        (nodes register while the first round starts); under ``flwr run`` the federation's
        ``num-supernodes`` decides how many there are, so fewer is a warning, not an error.
        """
        expected = self.server.config.federated.num_clients
        if not client_manager.wait_for(expected, timeout=CONNECT_TIMEOUT_S):
            logger.warning(
                "%d of the %d expected clients connected within %d s; training with them "
                "(set federated.num-clients to the federation's num-supernodes)",
                client_manager.num_available(),
                expected,
                CONNECT_TIMEOUT_S,
            )
        return client_manager.sample(
            num_clients=max(client_manager.num_available(), self.min_fit_clients),
            min_num_clients=self.min_fit_clients,
        )


def _one_vector(arrays: list[np.ndarray]) -> np.ndarray:
    """A reply's arrays as one flat vector (a well-formed reply has exactly one); the server
    checks its length against the mask, so a reply with none or too many is dropped there."""
    if not arrays:
        return np.empty(0, dtype=np.float32)
    return np.concatenate([np.asarray(a).reshape(-1) for a in arrays])
