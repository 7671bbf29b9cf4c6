"""Flower-free logic of federated rounds: the message protocol, a client's round, the server.

The Flower apps in ``clients/`` and ``server/`` only unpack messages, call these functions and
pack the replies.
"""

from fedprune.federated.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from fedprune.federated.client_round import ClientRoundResult, run_client_round
from fedprune.federated.protocol import arrays_to_model, model_to_arrays
from fedprune.federated.server_state import ClientReply, FederatedServer
from fedprune.federated.server_step import apply_update

__all__ = [
    "Checkpoint",
    "ClientReply",
    "ClientRoundResult",
    "FederatedServer",
    "apply_update",
    "arrays_to_model",
    "load_checkpoint",
    "model_to_arrays",
    "run_client_round",
    "save_checkpoint",
]
