"""Round time of one config simulated (Ray, in-process) vs deployed (SuperLink + SuperNodes).

Usage::

    python experiments/deploy_round_time.py --nodes 3 --rounds 3 --out runs/deploy-round-time

Runs the same small federated config twice -- :func:`server.simulation.run_federated` and
:class:`server.deployment.LocalDeployment` on 127.0.0.1 (TLS, node authentication) -- each with
fresh node ledgers, and prints the seconds of every round (from the server's per-round
``elapsed_s``) and the start-up cost of a ClientApp process, which a SuperNode pays for every
message (a SecAgg+ round sends each node four): Python + Flower alone, our ClientApp module, and
the modules a training message needs. Writes ``OUT/round_time.json``. Numbers depend on the
machine's load: run it on an idle machine, and report the load with them.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from fedprune.config import RunConfig
from fedprune.io import write_json
from fedprune.summary import RunSummary
from server.deployment import LocalDeployment
from server.simulation import run_federated, simulated_node_policy

IMPORTS = {
    "python + flwr.clientapp (Flower's own)": "import flwr.clientapp",
    "+ clients.client_app (every message)": "import flwr.clientapp, clients.client_app",
    "+ core for a training message": (
        "import flwr.clientapp, clients.client_app, fedprune.federated, fedprune.pipeline"
    ),
}


def round_seconds(summary: RunSummary) -> list[float]:
    """Seconds of each round (the server's cumulative ``elapsed_s``, differenced)."""
    elapsed = [r.elapsed_s for r in summary.rounds]
    return [b - a for a, b in zip([0.0, *elapsed[:-1]], elapsed, strict=True)]


def import_seconds(statement: str, repeats: int) -> float:
    """Median wall time of a fresh interpreter running ``statement``."""
    root = str(Path(__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": root}
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", statement], check=True, env=env, cwd=root)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3, help="import timing repeats")
    parser.add_argument("--out", default="runs/deploy-round-time")
    args = parser.parse_args(argv)
    out = Path(args.out).resolve()
    flat: dict[str, Any] = {
        "federated.num-clients": args.nodes,
        "federated.num-rounds": args.rounds,
        "federated.local-epochs": 1,
        "warmup.epochs": 1,
        "secagg.enabled": True,
    }
    config = RunConfig().replace(**flat)
    results: dict[str, Any] = {"config": flat, "load_before": os.getloadavg()}

    imports = {name: import_seconds(code, args.repeats) for name, code in IMPORTS.items()}
    results["clientapp_start_s"] = imports

    policy = simulated_node_policy(config, ledger_dir=str(out / "simulated-ledgers"))
    simulated = run_federated({**flat, "out-dir": str(out / "simulated")}, policy=policy)
    results["simulated_round_s"] = round_seconds(simulated)

    with LocalDeployment(
        Path(tempfile.mkdtemp(prefix="fedprune-bench-")),
        num_nodes=args.nodes,
        ledger_root=out / "deployed-ledgers",
        policy=simulated_node_policy(config),
    ) as deployment:
        deployed = deployment.run({**flat, "out-dir": str(out / "deployed")})
    results["deployed_round_s"] = round_seconds(deployed)
    results["load_after"] = os.getloadavg()
    write_json(out / "round_time.json", results)

    print(f"{args.nodes} nodes, {args.rounds} rounds, SecAgg+ on; load {results['load_before']}")
    for name in ("simulated_round_s", "deployed_round_s"):
        print(f"{name}: " + ", ".join(f"{s:.1f}" for s in results[name]))
    for name, seconds in imports.items():
        print(f"ClientApp process start, {name}: {seconds:.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
