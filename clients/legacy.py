"""Every import the ClientApp needs from Flower's legacy API, in one place.

SecAgg+ exists only on Flower's legacy path in 1.41: ``secaggplus_mod`` on the client needs the
legacy fit-reply shape of a ``NumPyClient``.
"""

import logging

from flwr.client import NumPyClient
from flwr.client.mod import secaggplus_mod
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS

__all__ = ["RECORD_KEY_CONFIGS", "NumPyClient", "secaggplus_mod"]

# Opacus calls logging.basicConfig() on import; Flower's own handler is enough.
logging.getLogger("flwr").propagate = False
