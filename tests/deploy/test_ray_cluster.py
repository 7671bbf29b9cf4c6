"""``fedprune run --ray-address``: the simulation joins a running Ray cluster only when asked.

The test starts its own Ray head (``ray start --head --block``, every port kernel-chosen, its own
temp dir) as a :class:`ProcessSet` service, so every Ray daemon and worker carries the set's
marker and is stopped by PID at the end (never ``ray stop``, which would end anyone's Ray). A
tiny simulation then runs in a fresh interpreter against that head; the head's session logs show
the driver and its client actors, and the driver's own Ray temp dir shows it started no Ray of
its own.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fedprune.deploy.processes import ProcessSet, free_ports

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
RAY = Path(sys.executable).parent / "ray"

CHILD = """
import json, sys
from server.simulation import run_federated, simulated_node_policy
from fedprune.config import RunConfig
overrides, ledger_dir, address = json.loads(sys.argv[1]), sys.argv[2], sys.argv[3]
policy = simulated_node_policy(RunConfig().replace(**overrides), ledger_dir=ledger_dir)
summary = run_federated(overrides, policy=policy, progress=False, ray_address=address)
print("RAY-RESULT " + json.dumps({"rounds": len(summary.rounds)}))
"""

SMALL = {
    "federated.num-clients": 2,
    "federated.num-rounds": 1,
    "federated.local-epochs": 1,
    "warmup.epochs": 1,
    "secagg.enabled": False,
}


@pytest.fixture(scope="module")
def ray_head() -> Iterator[dict[str, Any]]:
    # short path: Ray's Unix sockets live under its temp dir
    temp = Path(tempfile.mkdtemp(prefix="fpray", dir="/tmp"))
    names = ["port", "node-manager", "object-manager", "client", "agent-grpc", "agent-http"]
    ports = dict(zip(names, free_ports(len(names) + 2), strict=False))
    metrics, runtime_env = free_ports(2)
    argv = [
        str(RAY), "start", "--head", "--block", "--disable-usage-stats",
        "--include-dashboard=false", "--num-cpus", "2", "--temp-dir", str(temp / "ray"),
        "--port", str(ports["port"]), "--node-manager-port", str(ports["node-manager"]),
        "--object-manager-port", str(ports["object-manager"]),
        "--ray-client-server-port", str(ports["client"]),
        "--dashboard-agent-grpc-port", str(ports["agent-grpc"]),
        "--dashboard-agent-listen-port", str(ports["agent-http"]),
        "--metrics-export-port", str(metrics), "--runtime-env-agent-port", str(runtime_env),
    ]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    processes = ProcessSet(temp / "logs", grace=15.0)
    try:
        with processes:
            head = processes.start("ray-head", argv, env=env)
            address = f"127.0.0.1:{ports['port']}"
            deadline = time.monotonic() + 120
            while not list((temp / "ray").glob("session_*/logs/raylet.out")):
                assert head.alive(), head.log_tail()
                assert time.monotonic() < deadline, head.log_tail()
                time.sleep(0.5)
            time.sleep(2.0)  # the raylet registers with the GCS
            yield {"address": address, "temp": temp, "processes": processes}
        assert processes.marked_pids() == []
    finally:
        shutil.rmtree(temp, ignore_errors=True)


def test_a_simulation_runs_on_the_named_cluster_and_leaves_it_running(
    ray_head: dict[str, Any], tmp_path: Path
) -> None:
    session_logs = next((ray_head["temp"] / "ray").glob("session_2*")) / "logs"
    drivers_before = set(session_logs.glob("python-core-driver-*"))
    own_tmp = tmp_path / "driver-ray"
    own_tmp.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env |= {"RAY_TMPDIR": str(own_tmp), "PYTHONPATH": str(ROOT)}
    overrides = {**SMALL, "out-dir": str(tmp_path / "out")}
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            CHILD,
            json.dumps(overrides),
            str(tmp_path / "ledgers"),
            ray_head["address"],
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    result = next(ln for ln in done.stdout.splitlines() if ln.startswith("RAY-RESULT "))
    assert json.loads(result.removeprefix("RAY-RESULT ")) == {"rounds": 1}
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["rounds"][0]["clients_trained"] == 2
    # the driver and its client actors ran on the test's cluster ...
    assert set(session_logs.glob("python-core-driver-*")) - drivers_before
    assert list(session_logs.glob("python-core-worker-*"))
    # ... the driver started no Ray of its own ...
    assert not list(own_tmp.rglob("session_*"))
    # ... and the cluster is still up after the run (only the driver disconnected)
    assert ray_head["processes"].services["ray-head"].alive()
