"""Every import the ServerApp needs from Flower's legacy API, in one place.

SecAgg+ exists only on Flower's legacy path in 1.41 (``SecAggPlusWorkflow`` inside a
``DefaultWorkflow`` driven by a ``LegacyContext`` around a ``flwr.server.strategy`` strategy).
Keeping those names here lets the rest of the app read as the current API.
"""

import logging

from flwr.common import (
    FitIns,
    FitRes,
    Parameters,
    Scalar,
    ndarrays_to_parameters,
    parameters_to_ndarrays,
)
from flwr.server import LegacyContext, ServerConfig
from flwr.server.client_manager import ClientManager
from flwr.server.client_proxy import ClientProxy
from flwr.server.strategy import FedAvg
from flwr.server.workflow import DefaultWorkflow, SecAggPlusWorkflow

__all__ = [
    "ClientManager",
    "ClientProxy",
    "DefaultWorkflow",
    "FedAvg",
    "FitIns",
    "FitRes",
    "LegacyContext",
    "Parameters",
    "Scalar",
    "SecAggPlusWorkflow",
    "ServerConfig",
    "ndarrays_to_parameters",
    "parameters_to_ndarrays",
]

# Opacus calls logging.basicConfig() on import, which gives the root logger a handler too, so
# every Flower record -- debug included -- would print twice. Flower's own handler is enough.
logging.getLogger("flwr").propagate = False
