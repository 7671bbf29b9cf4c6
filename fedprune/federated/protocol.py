"""Names and array conversions shared by the federated server and clients (one case: kebab)."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

__all__ = [
    "CONFIG_MASK",
    "CONFIG_ROUND",
    "METRIC_ACCOUNTANT",
    "METRIC_DELTA",
    "METRIC_EPSILON",
    "METRIC_FIT_S",
    "METRIC_NOISE",
    "METRIC_NOISE_MULTIPLIER",
    "METRIC_PARTITION_ID",
    "METRIC_REFUSED",
    "METRIC_ROUND_STEPS",
    "METRIC_SAMPLE_RATE",
    "METRIC_SECAGG_CLIPPED",
    "METRIC_STEPS",
    "METRIC_TRAIN_S",
    "arrays_to_model",
    "model_to_arrays",
]

# Server -> client (per-round fit config). The run's settings reach clients through Flower's
# ``context.run_config`` (``[tool.flwr.app.config]`` + ``--run-config``), not these messages.
CONFIG_ROUND = "server-round"
CONFIG_MASK = "mask"
"""``ParameterMask.to_bytes()`` of the coordinates to train this round."""

# Client -> server (per-client metrics; visible to the server in plaintext, even under SecAgg+)
METRIC_PARTITION_ID = "partition-id"
METRIC_EPSILON = "epsilon"
METRIC_DELTA = "delta"
METRIC_NOISE_MULTIPLIER = "noise-multiplier"
METRIC_SAMPLE_RATE = "sample-rate"
METRIC_STEPS = "steps"
"""Total DP-SGD steps the client's ledger holds (all rounds)."""
METRIC_ROUND_STEPS = "round-steps"
METRIC_ACCOUNTANT = "accountant"
METRIC_NOISE = "noise"
"""``"secure"`` or ``"reproducible"`` (the client's own choice; see its privacy policy)."""
METRIC_REFUSED = "refused"
"""Empty string, or why the client refused to train this round."""
METRIC_SECAGG_CLIPPED = "secagg-clipped"
"""How many update coordinates SecAgg+ will clip (scaled value beyond its clipping range)."""
METRIC_TRAIN_S = "train-s"
"""Wall seconds of the round's local training (the recipe's steps, with their budget check and
ledger records); absent when the client refused. For benchmarks and logs only: never used by
privacy logic. It tells the server no more than the arrival time of the reply already does."""
METRIC_FIT_S = "fit-s"
"""Wall seconds of the client's whole round (partition, model, mask checks, ledger load and
save, training, update); as :data:`METRIC_TRAIN_S`, for benchmarks and logs only."""


def model_to_arrays(model: nn.Module) -> list[np.ndarray]:
    """The model's ``state_dict`` values as float32 numpy arrays, in ``state_dict`` order."""
    return [
        t.detach().cpu().numpy().astype(np.float32, copy=True) for t in model.state_dict().values()
    ]


def arrays_to_model(model: nn.Module, arrays: list[np.ndarray]) -> nn.Module:
    """Load :func:`model_to_arrays` output into ``model`` (in place); shapes must match exactly.

    Raises
    ------
    ValueError
        Wrong number of arrays or a shape mismatch (the message names the tensor).
    """
    state = model.state_dict()
    if len(arrays) != len(state):
        raise ValueError(f"expected {len(state)} arrays for the model, got {len(arrays)}")
    new = {}
    for (name, ref), arr in zip(state.items(), arrays, strict=True):
        if tuple(arr.shape) != tuple(ref.shape):
            raise ValueError(
                f"array for {name!r} has shape {tuple(arr.shape)}, expected {tuple(ref.shape)}"
            )
        new[name] = torch.as_tensor(np.asarray(arr), dtype=ref.dtype)
    model.load_state_dict(new)
    return model
