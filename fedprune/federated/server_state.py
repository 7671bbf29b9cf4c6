"""``FederatedServer``: the Flower-free server side of a run (masks, aggregation, bookkeeping).

The Flower strategy in ``server/strategy.py`` only translates Flower's hooks into calls here.
The server holds public and test data only; it never sees a private record.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn
from tqdm.auto import tqdm

from fedprune.config import RunConfig
from fedprune.data import PublicPrivateSplit
from fedprune.federated.checkpoint import Checkpoint, save_checkpoint
from fedprune.federated.protocol import (
    METRIC_ACCOUNTANT,
    METRIC_DELTA,
    METRIC_EPSILON,
    METRIC_FIT_S,
    METRIC_NOISE,
    METRIC_NOISE_MULTIPLIER,
    METRIC_PARTITION_ID,
    METRIC_REFUSED,
    METRIC_SAMPLE_RATE,
    METRIC_SECAGG_CLIPPED,
    METRIC_STEPS,
    METRIC_TRAIN_S,
)
from fedprune.federated.server_step import apply_update
from fedprune.masks import ParameterMask
from fedprune.pipeline import pick_mask
from fedprune.summary import HolderSpend, RoundRecord, RunSummary
from fedprune.training import evaluate
from fedprune.training.recipe import mask_due

__all__ = ["ClientReply", "FederatedServer"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ClientReply:
    """One client's fit reply: its update vector, weight and plaintext metrics."""

    update: np.ndarray
    num_examples: int
    metrics: dict[str, Any]


class FederatedServer:
    """Global model, mask schedule and run summary of one federated run.

    Parameters
    ----------
    config:
        The resolved run config.
    split:
        Only ``split.public`` (masks) and ``split.test`` (central evaluation) are used.
    model:
        The global model, already warm-started on public data; updated in place.
    secure:
        Whether updates arrive through SecAgg+ (already averaged: every reply carries the mean).
    public_only_accuracy:
        Test accuracy of the warm-started model (for the summary).
    resumed:
        A checkpoint to continue from.

    Privacy
    -------
    Masks come from :func:`fedprune.pipeline.pick_mask` on the global model and public data
    only, so they cost no privacy. Per-client metrics (epsilon, partition size, refusal reason)
    reach the server in plaintext even under SecAgg+; only update vectors are hidden.
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
        self.config = config
        self.split = split
        self.model = model
        self.secure = secure
        self.mask: ParameterMask | None = None
        self.done = 0
        """Rounds completed before this process started (resume)."""
        if resumed is not None:
            self.done = resumed.round
            self.mask = resumed.mask
            self.summary = resumed.summary
            self.summary.config = config.to_flat()
        else:
            self.summary = RunSummary(
                kind="federated",
                config=config.to_flat(),
                public_only_test_accuracy=public_only_accuracy,
                total_coordinates=sum(p.numel() for p in model.parameters()),
                private=config.privacy.enabled,
                secure_aggregation=secure,
            )
        self.out_dir = Path(config.out_dir).resolve() if config.out_dir else None
        self._started = time.perf_counter() - self.summary.duration_s
        self._bar = tqdm(
            total=config.federated.num_rounds,
            initial=self.done,
            desc="rounds",
            unit="round",
            disable=not progress,
        )

    def mask_for_round(self, server_round: int) -> ParameterMask:
        """The mask of ``server_round`` (picked from public data when due)."""
        if self.mask is None or mask_due(
            self.config.mask, server_round, epochs_per_round=self.config.federated.local_epochs
        ):
            self.mask = pick_mask(
                self.model,
                self.config.mask,
                self.split.public,
                seed=self.config.seed,
                round_number=server_round,
            )
            self.summary.trained_coordinates = self.mask.num_selected
            logger.info(
                "round %d: mask %s with %d/%d coordinates",
                server_round,
                self.config.mask.strategy,
                self.mask.num_selected,
                self.mask.num_total,
            )
        return self.mask

    def aggregate(self, server_round: int, replies: list[ClientReply], *, failures: int) -> None:
        """Record the replies and add ``server_lr`` x their weighted mean update to the model."""
        if self.mask is None:
            raise RuntimeError("aggregate before any mask was sent")
        row = RoundRecord(round=server_round, failures=failures)
        checked = [(r, self._well_formed(server_round, r)) for r in replies]
        valid = [r for r, ok in checked if ok]
        row.failures += len(replies) - len(valid)
        for reply, ok in checked:
            if not ok:  # the client is named in the summary; nothing else it claimed is kept
                holder = self.summary.holders.setdefault(str(_partition_id(reply)), HolderSpend())
                holder.rounds_malformed += 1
        # Replies arrive in whatever order the clients finish; a fixed order makes the float
        # sum -- and so a resumed run's model -- independent of it.
        replies = sorted(valid, key=_partition_id)
        for reply in replies:
            pid = self._record_client(server_round, reply)
            if reply.metrics.get(METRIC_REFUSED):
                row.clients_refused.append(pid)
            else:
                _record_durations(row, pid, reply.metrics)
        weights = np.array([r.num_examples for r in replies], dtype=np.float64)
        row.clients_trained = int((weights > 0).sum())
        if weights.sum() > 0:
            update = self._mean_update(replies, weights)
            apply_update(self.model, self.mask, update, server_lr=self.config.federated.server_lr)
            row.update_norm = float(np.linalg.norm(update))
        else:
            row.skipped = "no client trained"
        self.summary.rounds.append(row)

    def evaluate_round(self, server_round: int) -> tuple[float, float]:
        """Evaluate on the test set, finish the round's row, checkpoint; ``(loss, accuracy)``."""
        result = evaluate(self.model, self.split.test)
        rounds = self.summary.rounds
        if not rounds or rounds[-1].round != server_round:
            # SecAgg+ halted this round: no aggregate reached the strategy.
            rounds.append(RoundRecord(round=server_round, skipped="secure aggregation halted"))
            logger.warning(
                "round %d: secure aggregation halted (too few clients left to reconstruct the "
                "sum); round skipped, model unchanged",
                server_round,
            )
        row = rounds[-1]
        row.test_accuracy, row.test_loss = result.accuracy, result.loss
        self.summary.test_accuracy, self.summary.test_loss = result.accuracy, result.loss
        row.elapsed_s = time.perf_counter() - self._started
        self.summary.duration_s = row.elapsed_s
        self._bar.update(1)
        self._bar.set_postfix(acc=f"{result.accuracy:.3f}")
        if self.out_dir is not None:
            save_checkpoint(
                self.out_dir,
                Checkpoint(
                    round=server_round,
                    model=self.model.state_dict(),
                    mask=self.mask,
                    summary=self.summary,
                ),
            )
        if server_round == self.config.federated.num_rounds:
            self._bar.close()
        return result.loss, result.accuracy

    def _well_formed(self, server_round: int, reply: ClientReply) -> bool:
        """Whether ``reply`` has a non-negative weight and, if its weight is positive, one finite
        value per selected coordinate; a malformed reply is dropped (logged), the round goes on.

        A zero-weight (refusing) reply's values are never used: a client that could not read
        the mask refuses with an empty vector. Under SecAgg+ every reply carries the shared
        average, which is NaN/inf when every client refused (total weight 0): those replies
        are refusals to record, not malformed ones.
        """
        assert self.mask is not None
        update = np.asarray(reply.update)
        problem = ""
        if reply.num_examples < 0:
            problem = f"negative weight {reply.num_examples}"
        elif reply.num_examples > 0 and update.size != self.mask.num_selected:
            problem = f"{update.size} values, expected {self.mask.num_selected}"
        elif reply.num_examples > 0 and not np.isfinite(update).all():
            problem = "non-finite values"
        if problem:
            logger.warning(
                "round %d: dropping client %s's update (%s)",
                server_round,
                reply.metrics.get(METRIC_PARTITION_ID, "?"),
                problem,
            )
        return not problem

    def _record_client(self, server_round: int, reply: ClientReply) -> int:
        m = reply.metrics
        pid = _partition_id(reply)
        holder = self.summary.holders.setdefault(str(pid), HolderSpend())
        reason = str(m.get(METRIC_REFUSED, ""))
        if reason:
            holder.rounds_refused += 1
            holder.refused = reason
        else:
            holder.rounds_trained += 1
        holder.num_examples = max(holder.num_examples, int(reply.num_examples))
        if METRIC_EPSILON in m:
            holder.epsilon = float(m[METRIC_EPSILON])
            holder.delta = float(m[METRIC_DELTA])
            holder.steps = int(m[METRIC_STEPS])
            holder.accountant = str(m[METRIC_ACCOUNTANT])
        if METRIC_NOISE_MULTIPLIER in m:
            holder.noise_multiplier = float(m[METRIC_NOISE_MULTIPLIER])
            holder.sample_rate = float(m[METRIC_SAMPLE_RATE])
        holder.noise = m.get(METRIC_NOISE, holder.noise)
        clipped = int(m.get(METRIC_SECAGG_CLIPPED, 0))
        if clipped:
            logger.warning(
                "round %d: SecAgg+ clipped %d coordinates of client %d's update; raise "
                "secagg.clipping-range or secagg.max-weight",
                server_round,
                clipped,
                pid,
            )
        return pid

    def _mean_update(self, replies: list[ClientReply], weights: np.ndarray) -> np.ndarray:
        # Only weighted replies: a zero-weight reply's values (unchecked) never enter the mean.
        used = weights > 0
        replies = [r for r, u in zip(replies, used, strict=True) if u]
        weights = weights[used]
        vectors = [np.asarray(r.update).reshape(-1) for r in replies]
        if self.secure:
            # SecAgg+ put the same weighted average into every reply.
            return vectors[0].astype(np.float32)
        stacked = np.stack([v.astype(np.float64) for v in vectors])
        return np.average(stacked, axis=0, weights=weights).astype(np.float32)


def _record_durations(row: RoundRecord, pid: int, metrics: dict[str, Any]) -> None:
    """Copy a client's reported wall times into the round's row (ignored unless finite and
    non-negative: they are unverified claims, used only by benchmarks)."""
    for key, into in ((METRIC_TRAIN_S, row.client_train_s), (METRIC_FIT_S, row.client_fit_s)):
        value = metrics.get(key)
        if isinstance(value, bool) or not isinstance(value, int | float):
            continue
        if math.isfinite(value) and value >= 0:
            into[str(pid)] = float(value)


def _partition_id(reply: ClientReply) -> int:
    """The partition id a reply claims (-1 when it names none, or not as an integer)."""
    pid = reply.metrics.get(METRIC_PARTITION_ID, -1)
    return pid if isinstance(pid, int) and not isinstance(pid, bool) else -1
