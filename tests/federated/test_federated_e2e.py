"""End to end in Flower's simulation engine (Ray): the real ServerApp and ClientApp, SecAgg+ on/off.

Two runs of one small config (digits, 3 clients, 2 rounds, freeze mode) that differ only in
``secagg.enabled``. ``privacy.max-epsilon`` sits between one and two rounds' spend, so every
client trains in round 1 and refuses round 2 (which it can only do if its ledger survived between
rounds): the final model of each run is its round-1 model, and the pair compares SecAgg+ with
plain averaging of identical client updates (the simulated nodes opt into reproducible noise;
each run has its own node ledger directory). A third pair of runs stops after round 1 and resumes
for round 2 on the same node ledgers. Each run is a subprocess with its own Ray temp dir, so the
Ray daemons it starts can be told apart from anyone else's.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from opacus.accountants import RDPAccountant

from fedprune.config import RunConfig
from fedprune.federated.client_round import client_partition, ledger_holder
from fedprune.masks import ParameterMask
from fedprune.privacy.ledger_store import LedgerStore
from fedprune.training.recipe import round_plan, steps_for

pytestmark = pytest.mark.slow

NUM_CLIENTS = 3
BASE = {
    "seed": 0,
    "data.dataset": "digits",
    "data.partition": "iid",
    "federated.num-clients": NUM_CLIENTS,
    "federated.num-rounds": 2,
    "federated.local-epochs": 1,
    "federated.server-lr": 1.0,
    "warmup.epochs": 2,
    "mask.mode": "freeze",
    "mask.strategy": "magnitude",
    "mask.density": 0.1,
    "privacy.accountant": "rdp",
}

# Runs in a fresh interpreter: run_federated (the simulated nodes' policy: their own ledger
# directory, reproducible noise), then report whether Ray is still up and which processes of
# this run's Ray temp dir (RAY_TMPDIR, from the environment) are still alive.
CHILD = """
import json, os, subprocess, sys, time
import ray, torch
from fedprune.config import RunConfig
from fedprune.pipeline import build_model, load_split, warm_start
from server.simulation import run_federated, simulated_node_policy
overrides, ledger_dir = json.loads(sys.argv[1]), sys.argv[2]
# The server's warm-started model, rebuilt in this process (same torch thread settings as the
# server's, so bit-identical) for the unselected-coordinates check.
config = RunConfig().replace(**overrides)
split = load_split(config.data, seed=config.seed)
initial = build_model(config, split)
warm_start(initial, split.public, config)
torch.save(initial.state_dict(), os.path.join(config.out_dir, "initial.pt"))
policy = simulated_node_policy(config, ledger_dir=ledger_dir, reproducible_noise=True)
run_federated(overrides, policy=policy, progress=False)
tag = os.environ["RAY_TMPDIR"]
for _ in range(20):
    alive = subprocess.run(["pgrep", "-f", tag], capture_output=True, text=True).stdout.split()
    if not alive:
        break
    time.sleep(0.5)
print("E2E-RESULT " + json.dumps({"ray_initialized": ray.is_initialized(), "alive": alive}))
"""


@dataclass
class Run:
    summary: dict[str, Any]
    checkpoint: dict[str, Any]
    initial: dict[str, torch.Tensor]
    child: dict[str, Any]
    ray_tmp: Path


def _ray_daemons(tag: str) -> set[int]:
    """PIDs of raylet / gcs_server processes whose command line names ``tag``."""
    out = subprocess.run(
        ["pgrep", "-a", "-f", "raylet|gcs_server"], capture_output=True, text=True
    ).stdout
    return {int(line.split()[0]) for line in out.splitlines() if tag in line}


def _launch(overrides: dict[str, Any], out_dir: Path, ray_tmp: Path, ledger_dir: Path) -> Run:
    ray_tmp.mkdir(parents=True)
    out_dir.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    # FEDPRUNE_HOME too: nothing may fall back to the user's real ledgers
    env |= {
        "RAY_TMPDIR": str(ray_tmp),
        "PYTHONUNBUFFERED": "1",
        "FEDPRUNE_HOME": str(ledger_dir.parent / "fedprune-home"),
    }
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            CHILD,
            json.dumps({**overrides, "out-dir": str(out_dir)}),
            str(ledger_dir),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
        cwd=out_dir.parent,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("E2E-RESULT ")]
    assert lines, proc.stdout[-2000:] + proc.stderr[-2000:]
    return Run(
        summary=json.loads((out_dir / "summary.json").read_text()),
        checkpoint=torch.load(out_dir / "checkpoint.pt", weights_only=True),
        initial=torch.load(out_dir / "initial.pt", weights_only=True),
        child=json.loads(lines[-1].removeprefix("E2E-RESULT ")),
        ray_tmp=ray_tmp,
    )


def _budget_between_one_and_two_rounds(config: RunConfig) -> float:
    """A max-epsilon every client can afford for round 1 but not for round 2."""
    parts = [
        client_partition(config.data, seed=config.seed, partition_id=i, num_partitions=NUM_CLIENTS)
        for i in range(NUM_CLIENTS)
    ]
    sizes = {len(p) for p in parts}
    after_one, after_all = [], []
    for n in sizes:
        q, round_steps = steps_for(
            num_examples=n, batch_size=config.optim.batch_size, epochs=config.federated.local_epochs
        )
        rounds = config.federated.num_rounds
        plan = round_plan(
            config.privacy, sample_rate=q, round_steps=(round_steps,) * rounds, round_index=0
        )
        after_one.append(plan.epsilon())
        after_all.append(plan.replace(steps=round_steps * rounds).epsilon())
    assert max(after_one) < min(after_all)
    return (max(after_one) + min(after_all)) / 2


@pytest.fixture(scope="module")
def e2e(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    config = RunConfig().replace(**BASE)
    budget = _budget_between_one_and_two_rounds(config)
    overrides = {**BASE, "privacy.max-epsilon": budget}
    root = tmp_path_factory.mktemp("e2e")
    # Ray's sockets live under its temp dir: keep the path short (Unix socket path limit)
    ray_tmp = Path(tempfile.mkdtemp(prefix="fpe2e", dir="/tmp"))
    try:
        runs = {
            name: _launch(
                {**overrides, "secagg.enabled": name == "secure"},
                root / name / "out",
                ray_tmp / name,
                root / name / "ledgers",
            )
            for name in ("secure", "plain")
        }
        # Resume: round 1, stop; then the same out-dir and node ledgers with two rounds. A fixed
        # noise multiplier keeps the mechanism the same whatever the planned round count.
        fixed = {**BASE, "secagg.enabled": False, "privacy.noise-multiplier": 1.0}
        ledgers = root / "resume" / "ledgers"
        out = root / "resume" / "out"
        stopped = _launch({**fixed, "federated.num-rounds": 1}, out, ray_tmp / "resume-1", ledgers)
        resumed = _launch(
            {**fixed, "federated.num-rounds": 2, "federated.resume": True},
            out,
            ray_tmp / "resume-2",
            ledgers,
        )
        yield {
            "config": config.replace(**{"privacy.max-epsilon": budget}),
            "runs": runs,
            "resume": {
                "config": config.replace(**{"privacy.noise-multiplier": 1.0}),
                "stopped": stopped,
                "resumed": resumed,
                "ledgers": ledgers,
            },
        }
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)


def test_runs_completed_with_round_two_refused_by_every_client(e2e: dict[str, Any]) -> None:
    for name, run in e2e["runs"].items():
        summary = run.summary
        assert summary["secure_aggregation"] is (name == "secure")
        assert [r["round"] for r in summary["rounds"]] == [1, 2]
        first, second = summary["rounds"]
        assert first["clients_trained"] == NUM_CLIENTS and first["failures"] == 0
        # refusing needs the round-1 spend, so each node's ledger survived between rounds
        assert second["skipped"] == "no client trained"
        assert sorted(second["clients_refused"]) == list(range(NUM_CLIENTS))
        assert second["test_accuracy"] == first["test_accuracy"]
        assert run.checkpoint["round"] == 2
        assert set(summary["holders"]) == {str(i) for i in range(NUM_CLIENTS)}
        assert all(h["noise"] == "reproducible" for h in summary["holders"].values())


def test_freeze_mode_leaves_unselected_coordinates_bit_identical(e2e: dict[str, Any]) -> None:
    for run in e2e["runs"].values():
        initial = run.initial
        final = run.checkpoint["model"]
        mask = ParameterMask.from_bytes(run.checkpoint["mask"])
        assert final.keys() == initial.keys()
        assert set(mask.names) == set(initial)  # the MLP has parameters only
        for name, selected in mask.items():
            assert torch.equal(final[name][~selected], initial[name][~selected]), name
        moved = sum(int((final[n][m] != initial[n][m]).sum()) for n, m in mask.items())
        assert moved > 0.9 * mask.num_selected


def test_secagg_average_equals_plain_average_within_quantisation_error(
    e2e: dict[str, Any],
) -> None:
    secure, plain = e2e["runs"]["secure"], e2e["runs"]["plain"]
    config: RunConfig = e2e["config"]
    assert secure.checkpoint["mask"] == plain.checkpoint["mask"]
    mask = ParameterMask.from_bytes(secure.checkpoint["mask"])
    a = mask.gather(secure.checkpoint["model"]).double().numpy()
    b = mask.gather(plain.checkpoint["model"]).double().numpy()
    # round 1 only (round 2 was refused), identical client updates in both runs
    total = sum(c["num_examples"] for c in secure.summary["holders"].values())
    s = config.secagg
    bound = (
        config.federated.server_lr
        * NUM_CLIENTS
        * 2
        * s.clipping_range
        / s.quantization_range
        * s.max_weight
        / total
    )
    float32_slack = 2 * np.spacing(np.abs(b).astype(np.float32)).astype(np.float64)
    err = np.abs(a - b)
    assert np.all(err <= bound + float32_slack), (err.max(), bound)
    assert err.max() > 0  # SecAgg+ really quantised: the two paths are not the same code


def test_every_client_epsilon_is_one_accountant_over_all_its_steps(e2e: dict[str, Any]) -> None:
    config: RunConfig = e2e["config"]
    for run in e2e["runs"].values():
        for pid, client in run.summary["holders"].items():
            n = client["num_examples"]
            _, round_steps = steps_for(
                num_examples=n,
                batch_size=config.optim.batch_size,
                epochs=config.federated.local_epochs,
            )
            assert client["steps"] == round_steps, pid  # round 1 only: round 2 refused
            assert (client["rounds_trained"], client["rounds_refused"]) == (1, 1), pid
            accountant = RDPAccountant()
            accountant.history = [
                (client["noise_multiplier"], client["sample_rate"], client["steps"])
            ]
            expected = accountant.get_epsilon(delta=config.privacy.delta)
            assert client["epsilon"] == pytest.approx(expected, rel=1e-9), pid
            assert client["epsilon"] <= config.privacy.max_epsilon
            assert client["delta"] == config.privacy.delta
            assert "max_epsilon" in client["refused"]


def test_resume_continues_the_clients_ledgers_without_double_counting(
    e2e: dict[str, Any],
) -> None:
    resume = e2e["resume"]
    config: RunConfig = resume["config"]
    stopped, resumed = resume["stopped"].summary, resume["resumed"].summary
    assert [r["round"] for r in stopped["rounds"]] == [1]
    # the resumed run trained round 2 only, continuing the checkpoint's rows and figures
    assert [r["round"] for r in resumed["rounds"]] == [1, 2]
    assert resumed["rounds"][0] == stopped["rounds"][0]
    assert resumed["rounds"][1]["clients_trained"] == NUM_CLIENTS
    assert resume["resumed"].checkpoint["round"] == 2
    store = LedgerStore(resume["ledgers"])
    for pid in range(NUM_CLIENTS):
        before, after = stopped["holders"][str(pid)], resumed["holders"][str(pid)]
        n = after["num_examples"]
        q, round_steps = steps_for(
            num_examples=n,
            batch_size=config.optim.batch_size,
            epochs=config.federated.local_epochs,
        )
        assert before["steps"] == round_steps, pid
        assert (after["rounds_trained"], after["rounds_refused"]) == (2, 0), pid
        # the node's ledger holds both rounds exactly once: round 1 from the first process,
        # round 2 from the resumed one -- neither restarted from zero nor counted twice
        ledger = store.open(
            ledger_holder(config, pid),
            accountant=config.privacy.accountant,
            delta=config.privacy.delta,
        )
        assert ledger.steps == after["steps"] == 2 * round_steps, pid
        assert after["noise_multiplier"] == 1.0 and after["sample_rate"] == q
        accountant = RDPAccountant()
        accountant.history = [(1.0, q, 2 * round_steps)]
        expected = accountant.get_epsilon(delta=config.privacy.delta)
        assert after["epsilon"] == pytest.approx(expected, rel=1e-9), pid
        assert ledger.epsilon() == pytest.approx(expected, rel=1e-9), pid
        assert after["epsilon"] > before["epsilon"]


def test_no_ray_processes_left_behind(e2e: dict[str, Any]) -> None:
    runs = [*e2e["runs"].values(), e2e["resume"]["stopped"], e2e["resume"]["resumed"]]
    for run in runs:
        # Ray really ran in this run's temp dir, so the process check below is meaningful
        assert list((run.ray_tmp / "ray").glob("session_2*")), run.ray_tmp
        # Ray was shut down when the simulation ended, not only at interpreter exit
        assert run.child["ray_initialized"] is False
        assert run.child["alive"] == []
        assert _ray_daemons(str(run.ray_tmp)) == set()
