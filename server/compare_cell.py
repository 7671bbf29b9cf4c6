"""The ``federated`` cell runner of ``fedprune compare``: one Ray simulation per cell, in a child.

Registered into :data:`fedprune.compare.CELL_RUNNERS` by :func:`register_cell_runner`, which
``server.simulation.register`` calls whenever the ``fedprune`` command line loads the app's
commands, so the core never imports this package. Each cell runs in its own process
(``python -m server.compare_cell CELL_DIR PARENT_PID``) with its own session and short Ray temp
dir, so Ray starts fresh and whatever it leaves behind is ended by process group; the cell ends
itself when its parent dies. The cell's simulated nodes
keep a fresh ledger of their own in ``<cell dir>/ledgers`` (research runs report each run's own
epsilon; see :func:`server.simulation.simulated_node_policy`).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path

from fedprune.compare import CELL_RUNNERS
from fedprune.config import RunConfig
from fedprune.deploy.processes import end_process_group
from fedprune.io import atomic_write, read_json
from fedprune.summary import RunSummary

__all__ = ["CELL_TIMEOUT_S", "register_cell_runner", "run_federated_cell"]

CELL_TIMEOUT_S = 3600.0
LEDGER_DIR = "ledgers"
OVERRIDES_FILE = "overrides.json"


def run_federated_cell(config: RunConfig, *, timeout_s: float = CELL_TIMEOUT_S) -> RunSummary:
    """Run ``config`` (``out-dir`` = the cell directory) in a child process; its summary.

    Raises ``RuntimeError`` when the child fails, times out or leaves an incomplete summary
    (the child's output is in ``<cell dir>/log.txt``).
    """
    out = Path(config.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(out / LEDGER_DIR, ignore_errors=True)  # a fresh ledger for every launch
    (out / "summary.json").unlink(missing_ok=True)
    # json.dumps, not write_json: an ``inf`` budget must reach the child as Infinity, not null.
    text = json.dumps(config.to_flat(), indent=1) + "\n"
    atomic_write(out / OVERRIDES_FILE, lambda f: f.write(text.encode()))
    ray_tmp = tempfile.mkdtemp(prefix="fc", dir="/tmp")  # Ray's socket paths must stay short
    env = {**os.environ, "RAY_TMPDIR": ray_tmp, "PYTHONUNBUFFERED": "1"}
    env.pop("RAY_ADDRESS", None)
    command = [sys.executable, "-m", "server.compare_cell", str(out), str(os.getpid())]
    with (out / "log.txt").open("w") as log:
        child = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
        try:
            code: int | None = child.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            code = None
        finally:
            end_process_group(child.pid)
            shutil.rmtree(ray_tmp, ignore_errors=True)
    if code != 0:
        what = f"timed out after {timeout_s:.0f} s" if code is None else f"exited with {code}"
        raise RuntimeError(f"federated cell {what}; see {out / 'log.txt'}")
    summary = RunSummary.read(out)
    if summary.rounds_completed < config.federated.num_rounds or summary.test_accuracy is None:
        raise RuntimeError(
            f"federated cell finished {summary.rounds_completed}/"
            f"{config.federated.num_rounds} rounds; see {out / 'log.txt'}"
        )
    return summary


def register_cell_runner() -> None:
    """Add ``federated`` to :data:`fedprune.compare.CELL_RUNNERS` (once)."""
    if "federated" not in CELL_RUNNERS.names():
        CELL_RUNNERS.register("federated", run_federated_cell)


def _child(cell_dir: Path) -> int:
    from server.simulation import run_federated, simulated_node_policy

    flat = read_json(cell_dir / OVERRIDES_FILE)
    config = RunConfig().replace(**flat)
    policy = simulated_node_policy(config, ledger_dir=str(cell_dir / LEDGER_DIR))
    run_federated(flat, policy=policy, progress=False)
    return 0


def _end_with_parent(parent: int, *, poll_s: float = 2.0) -> None:
    """A daemon thread that ends this cell's whole session (Ray included) once ``parent`` is
    gone, e.g. a ``fedprune compare`` or pytest killed with SIGKILL: the cell has its own
    session, so nothing else would stop it."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(poll_s)
        print(f"compare cell: parent {parent} is gone; stopping", file=sys.stderr, flush=True)
        os.killpg(os.getpgrp(), signal.SIGTERM)
        time.sleep(poll_s)
        os.killpg(os.getpgrp(), signal.SIGKILL)

    threading.Thread(target=watch, name="end-with-parent", daemon=True).start()


def _main() -> None:
    """Child entry: run, then leave at once with the run's status.

    ``os._exit``: when the simulation crashes (e.g. a Ray node that timed out during startup),
    Flower and Ray can leave non-daemon threads behind that would keep the process alive until
    the parent's timeout; a finished (or failed) cell should end now.
    """
    _end_with_parent(int(sys.argv[2]))
    try:
        code = _child(Path(sys.argv[1]))
    except BaseException:
        traceback.print_exc()
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    _main()
