"""The fedprune ServerApp: public warm start, then masked DP-FedAvg rounds (SecAgg+ by default)."""

from __future__ import annotations

import logging
from pathlib import Path

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from fedprune.config import RunConfig
from fedprune.federated import Checkpoint, FederatedServer, load_checkpoint
from fedprune.pipeline import build_model, load_split, warm_start
from fedprune.summary import RunSummary, format_table
from fedprune.training import evaluate
from server.legacy import DefaultWorkflow, LegacyContext, SecAggPlusWorkflow, ServerConfig
from server.strategy import MaskedDPFedAvg

__all__ = ["app", "make_server_app", "run_federation"]

logger = logging.getLogger(__name__)


def run_federation(
    grid: Grid, context: Context, config: RunConfig, *, progress: bool = True
) -> RunSummary:
    """Run ``config.federated.num_rounds`` rounds on ``grid`` and return the run summary."""
    split = load_split(config.data, seed=config.seed)
    model = build_model(config, split)
    resumed = _resumable_checkpoint(config)
    if resumed is None:
        warm_start(model, split.public, config, progress=progress)
        public_only = evaluate(model, split.test).accuracy
        logger.info("public-only warm start: test accuracy %.4f", public_only)
    else:
        model.load_state_dict(resumed.model)
        public_only = resumed.summary.public_only_test_accuracy
        logger.info("resuming after round %d from %s", resumed.round, config.out_dir)
        if resumed.round >= config.federated.num_rounds:
            logger.info("all %d rounds already done", config.federated.num_rounds)
            return resumed.summary
    server = FederatedServer(
        config=config,
        split=split,
        model=model,
        secure=config.secagg.enabled,
        public_only_accuracy=public_only,
        resumed=resumed,
        progress=progress,
    )
    legacy = LegacyContext(
        context=context,
        config=ServerConfig(num_rounds=config.federated.num_rounds - server.done),
        strategy=MaskedDPFedAvg(server),
    )
    workflow = DefaultWorkflow()
    if config.secagg.enabled:
        s = config.secagg
        workflow = DefaultWorkflow(
            fit_workflow=SecAggPlusWorkflow(
                num_shares=s.share_fraction,
                reconstruction_threshold=s.threshold_fraction,
                clipping_range=s.clipping_range,
                quantization_range=s.quantization_range,
                max_weight=s.max_weight,
            )
        )
    workflow(grid, legacy)
    if progress:
        print(format_table(server.summary))
    return server.summary


def _resumable_checkpoint(config: RunConfig) -> Checkpoint | None:
    """The checkpoint to resume from, if ``federated.resume`` is set and one exists."""
    if not (config.federated.resume and config.out_dir):
        return None
    checkpoint = load_checkpoint(Path(config.out_dir))
    if checkpoint is not None:
        checkpoint.check_resumable_by(config)
    return checkpoint


def make_server_app(
    config: RunConfig | None = None,
    *,
    sink: list[RunSummary] | None = None,
    progress: bool = True,
) -> ServerApp:
    """A ServerApp running :func:`run_federation`.

    ``config=None`` parses ``context.run_config`` (``flwr run``, where ``[tool.flwr.app.config]``
    and ``--run-config`` fill it); otherwise the given config is used (in-process launchers).
    The summary is appended to ``sink`` when given.
    """
    server_app = ServerApp()

    @server_app.main()
    def main(grid: Grid, context: Context) -> None:
        resolved = config if config is not None else RunConfig.from_flat(dict(context.run_config))
        summary = run_federation(grid, context, resolved, progress=progress)
        if sink is not None:
            sink.append(summary)

    return server_app


app = make_server_app()
