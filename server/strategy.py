"""``MaskedDPFedAvg``: picks masks from public data, broadcasts them, applies the mean update.

One strategy serves both aggregation paths. With SecAgg+ the workflow has already summed the
clients' masked vectors and hands every ``FitRes`` the same weighted average (the server never
sees an individual update); without it, the strategy computes that weighted average itself.
"""

from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn
from tqdm.auto import tqdm

from fedprune.config import RunConfig
from fedprune.data import PublicPrivateSplit
from fedprune.federated import apply_update, mask_due, model_to_arrays
from fedprune.federated.protocol import (
    CONFIG_MASK,
    CONFIG_ROUND,
    CONFIG_RUN,
    METRIC_PARTITION_ID,
    METRIC_REFUSED,
    METRIC_SECAGG_CLIPPED,
)
from fedprune.masks import ParameterMask
from fedprune.pipeline import pick_mask
from fedprune.training import evaluate
from server.checkpoint import Checkpoint, save_checkpoint
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
    """Federated averaging of masked DP-SGD updates on a server-held global model.

    Parameters
    ----------
    config:
        The resolved run config (sent to clients each round as JSON).
    split:
        Only ``split.public`` (mask selection) and ``split.test`` (central evaluation) are used:
        the server never holds private records.
    model:
        The global model, already warm-started on public data; updated in place.
    secure:
        Whether results arrive through SecAgg+ (already averaged).
    public_only_accuracy:
        Test accuracy of the warm-started model before any federated round (for the summary).

    Privacy
    -------
    Masks are chosen by :func:`fedprune.pipeline.pick_mask` from the global model and public
    data only, so they cost no privacy. Per-client metrics (epsilon, partition size, refusal
    reason) reach the server in plaintext even under SecAgg+; only updates are hidden.
    """

    def __init__(
        self,
        *,
        config: RunConfig,
        split: PublicPrivateSplit,
        model: nn.Module,
        secure: bool,
        public_only_accuracy: float,
        resumed: Checkpoint | None = None,
        progress: bool = True,
    ) -> None:
        n = config.federated.num_clients
        super().__init__(
            fraction_fit=1.0,
            fraction_evaluate=0.0,
            min_fit_clients=min(n, config.federated.min_clients),
            min_available_clients=min(n, config.federated.min_clients),
            accept_failures=True,
        )
        self.config = config
        self.split = split
        self.model = model
        self.secure = secure
        self.mask: ParameterMask | None = None
        self.rounds: list[dict[str, Any]] = []
        self.clients: dict[int, dict[str, Any]] = {}
        self.done = 0
        """Rounds completed before this process started (resume)."""
        if resumed is not None:
            self.done = resumed.round
            self.mask = resumed.mask
            self.rounds = list(resumed.summary["rounds"])
            self.clients = {int(k): v for k, v in resumed.summary["clients"].items()}
        self.public_only_accuracy = public_only_accuracy
        self.out_dir = Path(config.out_dir).resolve() if config.out_dir else None
        self._run_json = json.dumps(config.to_flat())
        self._started = time.perf_counter()
        self._bar = tqdm(
            total=config.federated.num_rounds,
            initial=self.done,
            desc="rounds",
            unit="round",
            disable=not progress,
        )

    # -- Flower hooks ---------------------------------------------------------------------

    def initialize_parameters(self, client_manager: ClientManager) -> Parameters | None:
        """The warm-started global model."""
        return ndarrays_to_parameters(model_to_arrays(self.model))

    def configure_fit(
        self, server_round: int, parameters: Parameters, client_manager: ClientManager
    ) -> list[tuple[ClientProxy, FitIns]]:
        """Pick the mask if due (public data only) and send model + mask + config to all."""
        server_round += self.done
        if self.mask is None or mask_due(self.config.mask, server_round):
            self.mask = pick_mask(
                self.model,
                self.config.mask,
                self.split.public,
                seed=self.config.seed + server_round,
            )
            logger.info(
                "round %d: mask %s with %d/%d coordinates",
                server_round,
                self.config.mask.strategy,
                self.mask.num_selected,
                self.mask.num_total,
            )
        fit_config: dict[str, Scalar] = {
            CONFIG_ROUND: server_round,
            CONFIG_MASK: self.mask.to_bytes(),
            CONFIG_RUN: self._run_json,
        }
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
        server_round += self.done
        assert self.mask is not None
        row: dict[str, Any] = {"round": server_round, "failures": len(failures)}
        weights = np.array([r.num_examples for _, r in results], dtype=np.float64)
        refused = []
        for _, res in results:
            metrics = dict(res.metrics)
            pid = int(metrics.pop(METRIC_PARTITION_ID, -1))
            client = self.clients.setdefault(pid, {"rounds_trained": 0, "rounds_refused": 0})
            reason = str(metrics.get(METRIC_REFUSED, ""))
            client["rounds_refused" if reason else "rounds_trained"] += 1
            client.update({k.replace("-", "_"): v for k, v in metrics.items()})
            client["num_examples"] = max(int(res.num_examples), client.get("num_examples", 0))
            if reason:
                refused.append(pid)
            if int(metrics.get(METRIC_SECAGG_CLIPPED, 0)):
                logger.warning(
                    "round %d: SecAgg+ clipped %d coordinates of client %d's update; raise "
                    "secagg.clipping-range or secagg.max-weight",
                    server_round,
                    int(metrics[METRIC_SECAGG_CLIPPED]),
                    pid,
                )
        row["clients_trained"] = int((weights > 0).sum())
        row["clients_refused"] = refused
        if weights.sum() > 0:
            update = self._mean_update(results, weights)
            apply_update(self.model, self.mask, update, server_lr=self.config.federated.server_lr)
            row["update_norm"] = float(np.linalg.norm(update))
        else:
            row["skipped"] = "no client trained"
        self.rounds.append(row)
        return ndarrays_to_parameters(model_to_arrays(self.model)), {}

    def evaluate(
        self, server_round: int, parameters: Parameters
    ) -> tuple[float, dict[str, Scalar]] | None:
        """Central evaluation of the global model on the test set; records the round."""
        result = evaluate(self.model, self.split.test)
        if server_round == 0:
            return result.loss, {"accuracy": result.accuracy}
        server_round += self.done
        if not self.rounds or self.rounds[-1]["round"] != server_round:
            # SecAgg+ halted this round: aggregate_fit was never called.
            self.rounds.append({"round": server_round, "skipped": "secure aggregation halted"})
        row = self.rounds[-1]
        row.update(test_accuracy=result.accuracy, test_loss=result.loss)
        row["elapsed_s"] = time.perf_counter() - self._started
        self._bar.update(1)
        self._bar.set_postfix(acc=f"{result.accuracy:.3f}")
        self._checkpoint(server_round)
        if server_round == self.config.federated.num_rounds:
            self._bar.close()
        return result.loss, {"accuracy": result.accuracy}

    # -- helpers ----------------------------------------------------------------------------

    def _participants(self, client_manager: ClientManager) -> list[ClientProxy]:
        """Every connected client (at least ``federated.min_clients``).

        Waits up to ``CONNECT_TIMEOUT_S`` for the ``federated.num_clients`` the config expects
        (nodes register while the first round starts); under ``flwr run`` the federation's
        ``num-supernodes`` decides how many there are, so fewer is a warning, not an error.
        """
        expected = self.config.federated.num_clients
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

    def _mean_update(
        self, results: list[tuple[ClientProxy, FitRes]], weights: np.ndarray
    ) -> np.ndarray:
        vectors = [parameters_to_ndarrays(r.parameters)[0].reshape(-1) for _, r in results]
        if self.secure:
            # SecAgg+ put the same weighted average into every result.
            return vectors[0].astype(np.float32)
        stacked = np.stack([v.astype(np.float64) for v in vectors])
        return np.average(stacked, axis=0, weights=weights).astype(np.float32)

    def summary(self) -> dict[str, Any]:
        """Results so far: final accuracy, per-round rows and per-client privacy figures."""
        final = next((r for r in reversed(self.rounds) if "test_accuracy" in r), None)
        total = sum(p.numel() for p in self.model.parameters())
        return {
            "mode": "federated",
            "secure_aggregation": self.secure,
            "test_accuracy": final["test_accuracy"] if final else math.nan,
            "public_only_test_accuracy": self.public_only_accuracy,
            "rounds_completed": len(self.rounds),
            "trained_coordinates": self.mask.num_selected if self.mask else 0,
            "total_coordinates": total,
            "rounds": self.rounds,
            "clients": {str(k): v for k, v in sorted(self.clients.items())},
            "duration_s": time.perf_counter() - self._started,
            "config": self.config.to_flat(),
        }

    def _checkpoint(self, server_round: int) -> None:
        """Write ``summary.json`` and ``checkpoint.pt`` (model, mask, round, config)."""
        if self.out_dir is not None:
            save_checkpoint(
                self.out_dir,
                Checkpoint(
                    round=server_round,
                    model=self.model.state_dict(),
                    mask=self.mask,
                    config=self.config.to_flat(),
                    summary=self.summary(),
                ),
            )
