"""Bytes one client uploads per round vs mask density, plain and under SecAgg+.

Computed from the message encoding, not estimated: the client's reply is built the way
``clients/client_app.py`` builds it -- a ``NumPyClient`` fit result ``[update]`` holding only
the selected coordinates (``float32``, ``ParameterMask.num_selected`` of them), the partition
size and the ``METRIC_*`` metrics of ``fedprune/federated/protocol.py`` -- converted to a
``RecordDict`` by Flower's legacy compat layer and serialised with Flower's protobuf serde
(``recorddict_to_proto(...).ByteSize()``: the message content, without gRPC framing and
message metadata, which do not depend on density).

SecAgg+: the reply of the *collect masked vectors* stage as ``secaggplus_mod`` builds it -- the
fit reply with its arrays cleared plus the masked vector: the update scaled, stochastically
quantised, prefixed by the weight factor, masked and reduced modulo the modulus range, each
array as ``ndarray_to_bytes`` (Flower's own functions, this run's ``SecAggConfig`` defaults).
Not counted: the key-agreement stages (two public keys; one ciphertext per neighbour; shares at
unmasking), which do not depend on density and grow with the number of neighbours.
"""

from __future__ import annotations

import numpy as np
import torch
from flwr.app import ConfigRecord
from flwr.common import Code, FitRes, Status, ndarray_to_bytes, ndarrays_to_parameters
from flwr.common.secure_aggregation.ndarrays_arithmetic import (
    factor_combine,
    parameters_addition,
    parameters_mod,
)
from flwr.common.secure_aggregation.quantization import quantize
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS, Key
from flwr.common.secure_aggregation.secaggplus_utils import pseudo_rand_gen
from flwr.common.serde import recorddict_to_proto
from flwr.compat.common.recorddict_compat import fitres_to_recorddict

from fedprune.config import SecAggConfig
from fedprune.federated import protocol
from fedprune.masks import ParameterMask
from fedprune.models import create_model

MODULUS_RANGE = 2**32  # SecAggPlusWorkflow's default modulus_range (server/server_app.py)
NUM_EXAMPLES = 600


def _metrics() -> dict[str, bool | bytes | float | int | str]:
    """One client's reply metrics, every key the client sends, with typical values."""
    return {
        protocol.METRIC_PARTITION_ID: 3,
        protocol.METRIC_EPSILON: 2.91,
        protocol.METRIC_DELTA: 1e-5,
        protocol.METRIC_NOISE_MULTIPLIER: 1.1,
        protocol.METRIC_SAMPLE_RATE: 64 / NUM_EXAMPLES,
        protocol.METRIC_STEPS: 120,
        protocol.METRIC_ROUND_STEPS: 10,
        protocol.METRIC_ACCOUNTANT: "rdp",
        protocol.METRIC_NOISE: "secure",
        protocol.METRIC_REFUSED: "",
        protocol.METRIC_SECAGG_CLIPPED: 0,
    }


def _reply(update: np.ndarray) -> object:
    fitres = FitRes(
        status=Status(code=Code.OK, message="Success"),
        parameters=ndarrays_to_parameters([update]),
        num_examples=NUM_EXAMPLES,
        metrics=_metrics(),
    )
    return fitres_to_recorddict(fitres, keep_input=True)


def plain_bytes(update: np.ndarray) -> int:
    """Serialised size of the plain fit reply carrying ``update``."""
    return int(recorddict_to_proto(_reply(update)).ByteSize())  # type: ignore[arg-type]


def secagg_bytes(update: np.ndarray, config: SecAggConfig) -> int:
    """Serialised size of the SecAgg+ collect-masked-vectors reply carrying ``update``."""
    content = _reply(update)
    q_ratio = round(NUM_EXAMPLES / config.max_weight * config.quantization_range)
    scaled = [update * (q_ratio / config.quantization_range)]
    quantised = factor_combine(
        q_ratio, quantize(scaled, config.clipping_range, config.quantization_range)
    )
    mask = pseudo_rand_gen(bytes(32), MODULUS_RANGE, [a.shape for a in quantised])
    masked = parameters_mod(parameters_addition(quantised, mask), MODULUS_RANGE)
    for record in content.array_records.values():  # type: ignore[attr-defined]
        record.clear()
    content.config_records[RECORD_KEY_CONFIGS] = ConfigRecord(  # type: ignore[attr-defined]
        {Key.MASKED_PARAMETERS: [ndarray_to_bytes(a) for a in masked]}, False
    )
    return int(recorddict_to_proto(content).ByteSize())  # type: ignore[arg-type]


def measure(
    name: str, input_shape: tuple[int, int, int], densities: list[float]
) -> list[dict[str, object]]:
    """Rows ``{model, density, selected, plain_bytes, secagg_bytes, *_vs_dense}`` (random
    masks, each coordinate kept with probability ``density``)."""
    torch.manual_seed(0)
    model = create_model(name, input_shape=input_shape, num_classes=10)
    config = SecAggConfig()
    gen = torch.Generator().manual_seed(1)
    rng = np.random.default_rng(0)
    rows: list[dict[str, object]] = []
    for density in sorted(set(densities) | {1.0}, reverse=True):
        mask = ParameterMask(
            {n: torch.rand(p.shape, generator=gen) < density for n, p in model.named_parameters()}
        )
        update = (rng.standard_normal(mask.num_selected) * 1e-2).astype(np.float32)
        rows.append(
            {
                "model": name,
                "density": density,
                "selected": mask.num_selected,
                "plain_bytes": plain_bytes(update),
                "secagg_bytes": secagg_bytes(update, config),
            }
        )
    dense = rows[0]
    for r in rows:
        r["plain_vs_dense"] = int(r["plain_bytes"]) / int(dense["plain_bytes"])  # type: ignore[call-overload]
        r["secagg_vs_dense"] = int(r["secagg_bytes"]) / int(dense["secagg_bytes"])  # type: ignore[call-overload]
    return rows


def table(rows: list[dict[str, object]]) -> str:
    lines = [
        f"  {'model':<10}{'density':>8}{'selected':>10}{'plain B':>12}{'x dense':>9}"
        f"{'SecAgg+ B':>12}{'x dense':>9}"
    ]
    for r in rows:
        lines.append(
            f"  {r['model']!s:<10}{float(r['density']):>8.0%}{r['selected']!s:>10}"  # type: ignore[arg-type]
            f"{r['plain_bytes']!s:>12}{float(r['plain_vs_dense']):>9.3f}"  # type: ignore[arg-type]
            f"{r['secagg_bytes']!s:>12}{float(r['secagg_vs_dense']):>9.3f}"  # type: ignore[arg-type]
        )
    return "\n".join(lines)
