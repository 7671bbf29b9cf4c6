"""``fedprune run``: the Flower app in the Simulation Engine (Ray), in-process.

Registered as a ``fedprune`` subcommand through the ``fedprune.commands`` entry point, so the
core CLI never imports this package. Settings come from the one default table
(:class:`fedprune.config.RunConfig`, the same values ``[tool.flwr.app.config]`` gives
``flwr run .``) with command-line overrides on top; it works from an installed wheel. The
simulated nodes' own privacy policy (ledger directory, budget, noise) is set here, by the
launcher that owns them, as a SuperNode operator sets ``--node-config``.

The ClientApp is loaded by its component reference, as Flower's own engine loads it; Ray is
started as a fresh local instance (never joining a running cluster) and shut down at the end,
unless the caller names a cluster to join (``--ray-address``, e.g. one started with
``ray start --head``): then the clients run as actors across that cluster's nodes, and only
this driver's connection is closed at the end (the cluster keeps running).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
import warnings
from pathlib import Path
from typing import Any

from fedprune.config import RunConfig
from fedprune.flags import (
    COMMON_FLAGS,
    FEDERATED_FLAGS,
    Flag,
    add_flags,
    add_output_flags,
    overrides,
)
from fedprune.io import ensure_writable_dir
from fedprune.privacy.policy import PrivacyPolicy
from fedprune.summary import RunSummary

__all__ = [
    "CLIENT_APP_FACTORY",
    "preflight",
    "register",
    "run_federated",
    "simulated_node_policy",
]

logger = logging.getLogger(__name__)

CLIENT_APP_FACTORY = "clients.client_app:make_client_app"
"""The ClientApp component (``[tool.flwr.app.components]`` names ``clients.client_app:app``)."""


def simulated_node_policy(
    config: RunConfig,
    *,
    ledger_dir: str = "",
    max_epsilon: float | None = None,
    reproducible_noise: bool = False,
) -> PrivacyPolicy:
    """The one policy every simulated node gets: the safe default, with the run's accountant
    and delta (the launcher's user owns the simulated nodes and their data), DP required unless
    the run is non-private, and the launcher's ledger directory, budget and noise choices."""
    default = PrivacyPolicy()
    return PrivacyPolicy(
        allow_non_private=not config.privacy.enabled,
        accountant=config.privacy.accountant,
        delta=config.privacy.delta,
        max_epsilon=default.max_epsilon if max_epsilon is None else max_epsilon,
        ledger_dir=str(Path(ledger_dir).resolve()) if ledger_dir else "",
        reproducible_noise=reproducible_noise,
    )


def run_federated(
    overrides: dict[str, Any],
    *,
    policy: PrivacyPolicy | None = None,
    progress: bool = True,
    ray_address: str = "",
) -> RunSummary:
    """Run the federated app in simulation with one Ray actor (1 CPU) per concurrent client.

    ``ray_address`` (``host:port`` of a running cluster's head) joins that cluster; empty (the
    default) starts a private local Ray with 2 CPUs, whatever ``RAY_ADDRESS`` says. Returns the
    summary the server also wrote to ``<out-dir>/summary.json``.
    """
    config = RunConfig().replace(**overrides)
    # Resolve now: the server writes relative to the launcher's working directory.
    config = config.replace(**{"out-dir": str(Path(config.out_dir).resolve())})
    policy = policy if policy is not None else simulated_node_policy(config)

    # Flower calls ray.init() itself: RAY_ADDRESS decides which Ray it gets.
    os.environ["RAY_ADDRESS"] = ray_address or "local"
    init_args: dict[str, Any] = {"address": ray_address or "local", "include_dashboard": False}
    if not ray_address:
        init_args["num_cpus"] = 2  # a cluster's resources are the cluster's own
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning, module="flwr")
        from flwr.simulation import run_simulation

    from server.server_app import make_server_app

    module, attr = CLIENT_APP_FACTORY.split(":")
    make_client_app = getattr(importlib.import_module(module), attr)
    sink: list[RunSummary] = []
    run_simulation(
        server_app=make_server_app(config, sink=sink, progress=progress),
        client_app=make_client_app(
            run_config=config.to_flat(), node_config=policy.to_node_config()
        ),
        num_supernodes=config.federated.num_clients,
        backend_config={
            "client_resources": {"num_cpus": 1, "num_gpus": 0.0},
            "init_args": init_args,
        },
    )
    if not sink:
        raise RuntimeError(
            "the federated run did not finish (see the log above); partial results, if any, are "
            f"in {config.out_dir}"
        )
    return sink[0]


def preflight(config: RunConfig, policy: PrivacyPolicy) -> int:
    """Check everything a run can fail on before it starts; return the rounds already done.

    Bad input then fails at once, in the launcher (one-line error, nothing written), instead of
    inside the simulation: a partition the data cannot give every client, an out-dir or (for a
    private run) a node ledger directory that cannot be written, a checkpoint that is corrupt
    or was written with other settings (``--resume``).

    Raises
    ------
    ValueError, PermissionError
        Naming the setting or path.
    """
    from fedprune.federated.client_round import check_partitions
    from server.server_app import _resumable_checkpoint

    check_partitions(config)
    if config.out_dir:
        ensure_writable_dir(config.out_dir, what="out-dir")
    if config.privacy.enabled:
        ensure_writable_dir(policy.ledger_path, what="ledger-dir", mode=0o700)
    checkpoint = _resumable_checkpoint(config)
    return 0 if checkpoint is None else checkpoint.round


def add_federated_flags(
    parser: argparse.ArgumentParser, flags: list[Flag] = COMMON_FLAGS + FEDERATED_FLAGS
) -> None:
    """The options of a federated run (``run``, ``deploy local``): ``flags``, --out/--quiet,
    --secagg/--no-secagg and --non-private; read back by :func:`federated_overrides`."""
    add_flags(parser, flags, defaults=RunConfig().to_flat())
    add_output_flags(parser)
    parser.add_argument(
        "--secagg",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="Flower SecAgg+ secure aggregation [secagg.enabled]",
    )
    parser.add_argument("--non-private", action="store_true", help="plain SGD on clients, no DP")


def federated_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The flat config keys the options of :func:`add_federated_flags` set."""
    flat = overrides(args, COMMON_FLAGS + FEDERATED_FLAGS)
    if args.secagg is not None:
        flat["secagg.enabled"] = args.secagg
    if args.non_private:
        flat["privacy.enabled"] = False
    return flat


def _run(args: argparse.Namespace) -> int:
    flat = federated_overrides(args)
    if args.resume:
        flat["federated.resume"] = True
    config = RunConfig().replace(**flat)
    policy = simulated_node_policy(
        config,
        ledger_dir=args.ledger_dir,
        max_epsilon=args.node_max_epsilon,
        reproducible_noise=args.reproducible_noise,
    )
    out_dir = Path(config.out_dir).resolve()
    done = preflight(config.replace(**{"out-dir": str(out_dir)}), policy)  # before Ray starts
    summary = run_federated(
        flat, policy=policy, progress=not args.quiet, ray_address=args.ray_address
    )
    idle = summary.idle_reason(after_round=done)
    if idle:
        # The run finished, but trained nothing: not a success to script around.
        print(f"fedprune: error: {' '.join(idle.split())} (results in {out_dir})", file=sys.stderr)
        return 1
    return 0


def register(subparsers: Any) -> None:
    """Add ``run`` to the ``fedprune`` command line (the ``fedprune.commands`` entry point),
    and the ``federated`` cell runner to ``fedprune compare``."""
    from server.compare_cell import register_cell_runner

    register_cell_runner()
    run = subparsers.add_parser(
        "run",
        help="federated run in Flower's simulation engine (Ray)",
        description="The Flower app (server/ + clients/) in simulation: the server picks masks "
        "from public data, clients run masked DP-SGD, updates meet in SecAgg+. Writes "
        "OUT/summary.json and OUT/checkpoint.pt after every round.",
    )
    add_federated_flags(run)
    run.add_argument(
        "--resume", action="store_true", help="continue from OUT/checkpoint.pt [federated.resume]"
    )
    run.add_argument(
        "--ray-address",
        default="",
        metavar="HOST:PORT",
        help="join this running Ray cluster (its head's address, from `ray start --head`); "
        "default: a private local Ray, never a running cluster",
    )
    node = run.add_argument_group(
        "simulated nodes' own privacy policy (a real SuperNode sets these in --node-config)"
    )
    node.add_argument(
        "--ledger-dir",
        default="",
        help="where the nodes keep their ledgers (default $FEDPRUNE_HOME/ledgers, persistent: "
        "every run on the same data composes with the earlier ones)",
    )
    node.add_argument(
        "--node-max-epsilon",
        type=float,
        default=None,
        help=f"each node's budget over all runs (default {PrivacyPolicy().max_epsilon:g})",
    )
    node.add_argument(
        "--reproducible-noise",
        action="store_true",
        help="DP noise from the seed (debugging only: anyone with the config can remove it)",
    )
    run.set_defaults(func=_run)
