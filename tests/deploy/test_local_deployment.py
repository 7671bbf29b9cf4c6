"""The app under Flower's Deployment Engine: a TLS SuperLink and 3 authenticated SuperNodes.

One deployment on 127.0.0.1 (kernel-chosen ports, so parallel runs do not collide; its own
``FLWR_HOME``) serves two runs: 2 SecAgg+ rounds, then -- after one SuperNode was stopped and
started again -- 1 more round with the same node ledgers. Each node keeps its ledger in its own
directory, as on its own disk. Node 2 is a silo with records of its own (node config
``data-dir``; a few records fewer than its partition, so its own count shows in its ledger). A
node with a valid but unregistered key is refused. Everything started is stopped at the end;
the module checks that no process is left.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from opacus.accountants import RDPAccountant
from torch.utils.data import TensorDataset

from fedprune.config import RunConfig
from fedprune.data import PrivateDataset, save_records
from fedprune.federated.client_data import ClientData, DirectoryData, PartitionData
from fedprune.masks import ParameterMask
from fedprune.pipeline import build_model, load_split, warm_start
from fedprune.privacy.ledger_store import LedgerStore
from fedprune.summary import RunSummary
from fedprune.training import evaluate
from fedprune.training.recipe import steps_for
from server.deployment import LocalDeployment
from server.simulation import simulated_node_policy

pytestmark = [pytest.mark.slow, pytest.mark.timeout(2400)]

NUM_NODES = 3
SILO = 2
"""The node that trains on a directory of its own records."""
BASE: dict[str, Any] = {
    "seed": 0,
    "data.dataset": "digits",
    "federated.num-rounds": 2,
    "federated.local-epochs": 1,
    "warmup.epochs": 1,
    "optim.batch-size": 64,
    "mask.mode": "freeze",
    "mask.density": 0.1,
    "secagg.enabled": True,
}


def _gone(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] == "Z"


@pytest.fixture(scope="module")
def deployed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    root = tmp_path_factory.mktemp("deploy")
    config = RunConfig().replace(**BASE)
    policy = simulated_node_policy(config)
    facts: dict[str, Any] = {"root": root, "config": config}
    x, y = PartitionData(SILO, NUM_NODES).load(config).dataset.tensors
    save_records(root / "silo", PrivateDataset(TensorDataset(x[:-7], y[:-7]), "silo"))
    deployment = LocalDeployment(
        root / "work",
        num_nodes=NUM_NODES,
        ledger_root=root / "ledgers",
        policy=policy,
        data_dirs={SILO: root / "silo"},
    )
    with deployment:
        facts["port"] = deployment.port
        facts["nodes"] = list(deployment.nodes)
        facts["first"] = deployment.run({**BASE, "out-dir": str(root / "first")})
        restarted = deployment.nodes[1]
        assert restarted.service is not None
        old_pid = restarted.service.pid
        deployment.restart_node(restarted)
        assert restarted.service is not None
        facts["restart_pids"] = (old_pid, restarted.service.pid)
        facts["second"] = deployment.run(
            {**BASE, "federated.num-rounds": 1, "out-dir": str(root / "second")}
        )
        intruder = deployment.start_unregistered_node()
        intruder.process.wait(timeout=120)
        facts["intruder"] = {"code": intruder.process.returncode, "log": intruder.log_tail(50)}
        facts["listed"] = deployment.list_nodes()
        facts["registered"] = {n.name: n.node_id for n in deployment.nodes}
        facts["running"] = deployment.processes.marked_pids()
        facts["logs"] = deployment.processes.log_dir
    facts["left"] = [p for p in facts["running"] if not _gone(p)]
    deadline = time.monotonic() + 10
    while facts["left"] and time.monotonic() < deadline:
        time.sleep(0.2)
        facts["left"] = [p for p in facts["left"] if not _gone(p)]
    facts["marked_after"] = deployment.processes.marked_pids()
    yield facts


def test_superlink_served_tls_and_every_node_authenticated(deployed: dict[str, Any]) -> None:
    superlink_log = (deployed["logs"] / "superlink.log").read_text()
    assert f"Uvicorn running on https://127.0.0.1:{deployed['port']}" in superlink_log
    registered = deployed["registered"]
    assert len(set(registered.values())) == NUM_NODES and None not in registered.values()
    for node in deployed["nodes"]:
        log = (deployed["logs"] / f"{node.name}.log").read_text()
        assert f"SuperNode ID: {registered[node.name]}" in log, node.name


def test_two_secagg_rounds_with_every_node(deployed: dict[str, Any]) -> None:
    summary: RunSummary = deployed["first"]
    assert summary.secure_aggregation is True
    assert [r.round for r in summary.rounds] == [1, 2]
    for record in summary.rounds:
        assert record.clients_trained == NUM_NODES and record.failures == 0 and not record.skipped
    assert set(summary.holders) == {str(k) for k in range(NUM_NODES)}
    assert all(h.noise == "secure" and h.rounds_trained == 2 for h in summary.holders.values())
    config: RunConfig = deployed["config"]
    for node in range(NUM_NODES):
        assert summary.holders[str(node)].num_examples == len(_source(deployed, node).load(config))
    silo_config = (deployed["root"] / "work" / "nodes" / f"node-{SILO}.toml").read_text()
    assert "data-dir" in silo_config and "partition-id" not in silo_config


def test_final_model_moved_only_on_the_mask_and_is_the_one_evaluated(
    deployed: dict[str, Any],
) -> None:
    config: RunConfig = deployed["config"]
    checkpoint = torch.load(deployed["root"] / "first" / "checkpoint.pt", weights_only=True)
    assert checkpoint["round"] == 2
    split = load_split(config.data, seed=config.seed)
    initial = warm_start(build_model(config, split), split.public, config).state_dict()
    final = checkpoint["model"]
    mask = ParameterMask.from_bytes(checkpoint["mask"])
    assert final.keys() == initial.keys()
    for name, selected in mask.items():
        assert torch.equal(final[name][~selected], initial[name][~selected]), name
    moved = sum(int((final[n][m] != initial[n][m]).sum()) for n, m in mask.items())
    assert moved > 0.9 * mask.num_selected
    model = build_model(config, split)
    model.load_state_dict(final)
    summary: RunSummary = deployed["first"]
    assert evaluate(model, split.test).accuracy == pytest.approx(summary.test_accuracy, abs=1e-12)


def _source(deployed: dict[str, Any], node: int) -> ClientData:
    """Node ``node``'s records: the silo's own directory, the others' partitions."""
    if node == SILO:
        return DirectoryData(deployed["root"] / "silo", client_id=SILO)
    return PartitionData(node, NUM_NODES)


def _ledger(deployed: dict[str, Any], node: int) -> Any:
    config: RunConfig = deployed["config"]
    store = LedgerStore(deployed["root"] / "ledgers" / f"node-{node}")
    holder, privacy = _source(deployed, node).ledger_holder(config), config.privacy
    return store.open(holder, accountant=privacy.accountant, delta=privacy.delta)


def _round_steps(deployed: dict[str, Any], node: int) -> int:
    config: RunConfig = deployed["config"]
    n = len(_source(deployed, node).load(config))
    _, steps = steps_for(
        num_examples=n, batch_size=config.optim.batch_size, epochs=config.federated.local_epochs
    )
    return steps


def test_each_node_keeps_its_own_ledger_on_its_own_disk(deployed: dict[str, Any]) -> None:
    config: RunConfig = deployed["config"]
    for node in range(NUM_NODES):
        directory = deployed["root"] / "ledgers" / f"node-{node}"
        assert sorted(p.name for p in directory.glob("*.ledger")) == [
            f"{_source(deployed, node).ledger_holder(config)}.ledger"
        ]
        last = deployed["second"].holders[str(node)]
        ledger = _ledger(deployed, node)
        assert ledger.steps == last.steps
        assert ledger.epsilon() == pytest.approx(last.epsilon, rel=1e-9)


def test_a_restarted_node_continues_its_ledger(deployed: dict[str, Any]) -> None:
    config: RunConfig = deployed["config"]
    old_pid, new_pid = deployed["restart_pids"]
    assert old_pid != new_pid and _gone(old_pid)
    first: RunSummary = deployed["first"]
    second: RunSummary = deployed["second"]
    assert [r.clients_trained for r in second.rounds] == [NUM_NODES]
    for node in range(NUM_NODES):  # node 1 was restarted; the others stayed up
        before, after = first.holders[str(node)], second.holders[str(node)]
        round_steps = _round_steps(deployed, node)
        assert before.steps == 2 * round_steps
        assert after.steps == 3 * round_steps, node  # continued, not restarted from zero
        accountant = RDPAccountant()
        accountant.history = [
            (before.noise_multiplier, before.sample_rate, before.steps),
            (after.noise_multiplier, after.sample_rate, round_steps),
        ]
        expected = accountant.get_epsilon(delta=config.privacy.delta)
        assert after.epsilon == pytest.approx(expected, rel=1e-9), node
        assert after.epsilon > before.epsilon


def test_an_unregistered_node_is_refused(deployed: dict[str, Any]) -> None:
    intruder = deployed["intruder"]
    assert intruder["code"] not in (0, None), intruder["log"]
    assert "Failed to activate SuperNode" in intruder["log"]
    superlink_log = (deployed["logs"] / "superlink.log").read_text()
    assert "No SuperNode found with the given public key" in superlink_log
    assert sorted(int(n["node-id"]) for n in deployed["listed"]) == sorted(
        deployed["registered"].values()
    )


def test_every_process_started_is_stopped(deployed: dict[str, Any]) -> None:
    # SuperLink, 3 SuperNodes, and their detached SuperExecs were running before the stop
    assert len(deployed["running"]) >= 1 + NUM_NODES + 1 + NUM_NODES
    assert deployed["left"] == []
    assert deployed["marked_after"] == []
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", deployed["port"])) != 0
    # and the Flower CLI state was the deployment's own, not the user's ~/.flwr
    config = (deployed["root"] / "work" / "flwr-home" / "config.toml").read_text()
    assert json.dumps(str(deployed["root"] / "work" / "certs" / "ca.crt")) in config
