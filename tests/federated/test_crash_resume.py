"""Crash and resume: ``fedprune run`` killed (SIGKILL) after round 1, then ``--resume``.

Two runs of one small config (digits, 3 clients, 2 rounds, no SecAgg+ -- its stochastic
quantisation is not reproducible -- and the nodes' reproducible noise): one uninterrupted, one
whose server process is killed right after round 1's checkpoint reached the disk and then
resumed with ``--resume``. The kill is a real ``SIGKILL`` of the ``fedprune run`` process (no
``finally`` runs, Ray is left as it was); only its moment is fixed, so the test is not a race.
The resumed run must end with the bit-identical model, the same per-round rows and client
figures, and node ledgers holding exactly the uninterrupted run's steps: none lost, none
counted twice.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from fedprune.config import RunConfig
from fedprune.federated.client_round import ledger_holder
from fedprune.privacy.ledger_store import LedgerStore

# Three Ray runs on a shared 2-core machine can exceed the suite's 900 s default.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(2400)]

NUM_CLIENTS = 3
ARGS = [
    "run",
    "--quiet",
    "--no-secagg",
    "--reproducible-noise",
    "--dataset",
    "digits",
    "--clients",
    str(NUM_CLIENTS),
    "--rounds",
    "2",
    "--local-epochs",
    "1",
    "--public-warmup-epochs",
    "1",
    "--density",
    "0.1",
    "--seed",
    "3",
]

# ``fedprune run`` in a fresh interpreter, SIGKILLed by itself right after the server wrote the
# checkpoint of round KILL_AFTER (argv[1]); the rest of argv is the command line.
KILLED_CHILD = """
import os, signal, sys
import fedprune.federated.server_state as server_state
from fedprune.cli import main
kill_after, real_save = int(sys.argv[1]), server_state.save_checkpoint
def save_then_die(out_dir, checkpoint):
    real_save(out_dir, checkpoint)
    if checkpoint.round == kill_after:
        os.kill(os.getpid(), signal.SIGKILL)
server_state.save_checkpoint = save_then_die
sys.exit(main(sys.argv[2:]))
"""

RUN_CHILD = "import sys; from fedprune.cli import main; sys.exit(main(sys.argv[1:]))"


def _env(ray_tmp: Path, home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    return env | {"RAY_TMPDIR": str(ray_tmp), "FEDPRUNE_HOME": str(home)}


def _kill_leftovers(tag: str) -> list[int]:
    """SIGKILL the processes (Ray daemons and workers) the killed run left under ``tag``."""
    out = subprocess.run(["pgrep", "-f", tag], capture_output=True, text=True).stdout
    pids = [int(p) for p in out.split() if int(p) != os.getpid()]
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return pids


def _fedprune(
    script: str, extra: list[str], run_args: list[str], ray_tmp: Path, home: Path
) -> subprocess.CompletedProcess[str]:
    ray_tmp.mkdir(parents=True)
    return subprocess.run(
        [sys.executable, "-c", script, *extra, *run_args],
        capture_output=True,
        text=True,
        env=_env(ray_tmp, home),
        timeout=1200,
        cwd=home.parent,
    )


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    root = tmp_path_factory.mktemp("crash")
    ray_tmp = Path(tempfile.mkdtemp(prefix="fpcr", dir="/tmp"))  # short: Unix socket paths
    try:
        result: dict[str, Any] = {}
        for name in ("whole", "crashed"):
            (root / name).mkdir()
            result[name] = {
                "out": root / name / "out",
                "ledgers": root / name / "ledgers",
                "home": root / name / "home",
            }
        whole = result["whole"]
        args = [*ARGS, "--out", str(whole["out"]), "--ledger-dir", str(whole["ledgers"])]
        proc = _fedprune(RUN_CHILD, [], args, ray_tmp / "whole", whole["home"])
        assert proc.returncode == 0, proc.stderr[-4000:]

        crashed = result["crashed"]
        args = [*ARGS, "--out", str(crashed["out"]), "--ledger-dir", str(crashed["ledgers"])]
        killed = _fedprune(KILLED_CHILD, ["1"], args, ray_tmp / "killed", crashed["home"])
        crashed["killed_returncode"] = killed.returncode
        crashed["after_kill"] = torch.load(crashed["out"] / "checkpoint.pt", weights_only=True)
        crashed["leftovers"] = _kill_leftovers(str(ray_tmp / "killed"))
        resumed = _fedprune(
            RUN_CHILD, [], [*args, "--resume"], ray_tmp / "resumed", crashed["home"]
        )
        assert resumed.returncode == 0, resumed.stderr[-4000:]
        crashed["resume_log"] = resumed.stderr
        for run in result.values():
            run["summary"] = json.loads((run["out"] / "summary.json").read_text())
            run["checkpoint"] = torch.load(run["out"] / "checkpoint.pt", weights_only=True)
        yield result
    finally:
        _kill_leftovers(str(ray_tmp))
        shutil.rmtree(ray_tmp, ignore_errors=True)


def test_the_server_really_died_after_round_one(runs: dict[str, Any]) -> None:
    crashed = runs["crashed"]
    assert crashed["killed_returncode"] == -signal.SIGKILL
    assert crashed["after_kill"]["round"] == 1
    assert "resuming after round 1" in crashed["resume_log"]


def test_resumed_run_ends_with_the_uninterrupted_model(runs: dict[str, Any]) -> None:
    whole, crashed = runs["whole"]["checkpoint"], runs["crashed"]["checkpoint"]
    assert whole["round"] == crashed["round"] == 2
    assert whole["mask"] == crashed["mask"]
    assert whole["model"].keys() == crashed["model"].keys()
    for name, value in whole["model"].items():
        assert torch.equal(crashed["model"][name], value), name
    # round 2 really moved the model after the crash (it is not the round-1 checkpoint)
    after_one = runs["crashed"]["after_kill"]["model"]
    assert any(not torch.equal(after_one[n], v) for n, v in whole["model"].items())


def test_resumed_run_has_the_uninterrupted_rows_and_client_figures(runs: dict[str, Any]) -> None:
    whole, crashed = runs["whole"]["summary"], runs["crashed"]["summary"]

    timings = {"elapsed_s", "client_train_s", "client_fit_s"}

    def comparable(row: dict[str, Any]) -> dict[str, Any]:
        # wall times differ between runs; who reported them does not
        return {
            k: sorted(v) if k in timings - {"elapsed_s"} else v
            for k, v in row.items()
            if k != "elapsed_s"
        }

    assert [comparable(r) for r in crashed["rounds"]] == [comparable(r) for r in whole["rounds"]]
    assert [r["clients_trained"] for r in whole["rounds"]] == [NUM_CLIENTS, NUM_CLIENTS]
    assert crashed["holders"] == whole["holders"]
    assert crashed["test_accuracy"] == whole["test_accuracy"]


def test_no_ledger_entry_lost_or_counted_twice(runs: dict[str, Any]) -> None:
    config = RunConfig.from_flat(runs["whole"]["summary"]["config"])
    for pid in range(NUM_CLIENTS):
        ledgers = {}
        for name in ("whole", "crashed"):
            store = LedgerStore(runs[name]["ledgers"])
            ledgers[name] = store.open(
                ledger_holder(config, pid),
                accountant=config.privacy.accountant,
                delta=config.privacy.delta,
            )
        whole, crashed = ledgers["whole"], ledgers["crashed"]
        assert crashed.entries == whole.entries, pid
        reported = runs["whole"]["summary"]["holders"][str(pid)]["steps"]
        assert crashed.steps == whole.steps == reported > 0, pid
        assert crashed.epsilon() == whole.epsilon()
