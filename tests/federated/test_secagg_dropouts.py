"""SecAgg+ with clients vanishing mid-round, in Flower's simulation engine (Ray).

One ``fedprune run`` (3 clients, 3 rounds, SecAgg+ with reconstruction threshold 2 of 3) whose
ClientApp has one extra outer mod that makes chosen nodes vanish (raise, so Flower reports the
node as failed) at a chosen SecAgg+ stage:

- round 1: client 2 vanishes at the share exchange: its secrets were never shared, so in
  Flower 1.41 SecAgg+ cannot unmask the survivors' sum (it expects shares of every node that
  sent keys) and halts after 0 and 1 trained -- the round is skipped, the model unchanged;
- round 2: client 2 trains, then vanishes instead of sending its masked vector: SecAgg+
  reconstructs its masks from the survivors' shares and the round completes with 0 and 1;
- round 3: clients 1 and 2 train, then vanish: one survivor is below the threshold, so SecAgg+
  halts and the round is skipped.

Each skipped round is one log line; every node's ledger holds every step it took, including
the rounds whose reply was lost or whose aggregate never formed.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fedprune.config import RunConfig
from fedprune.federated.client_round import client_partition, ledger_holder
from fedprune.privacy.ledger_store import LedgerStore
from fedprune.training.recipe import steps_for

# A Ray run on a shared 2-core machine can exceed the suite's 900 s default.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]

NUM_CLIENTS = 3
ARGS = [
    "run",
    "--quiet",
    "--secagg",
    "--dataset",
    "digits",
    "--clients",
    str(NUM_CLIENTS),
    "--rounds",
    "3",
    "--local-epochs",
    "1",
    "--public-warmup-epochs",
    "1",
    "--density",
    "0.1",
]

# (round, partition id, SecAgg+ stage) -> vanish "before" handling the message or "after"
# handling it (the node trained, its reply is lost).
DROPOUT_APP = """
from flwr.clientapp import ClientApp
from clients.client_app import _launcher_client_fn, optional_secaggplus_mod
from clients.legacy import RECORD_KEY_CONFIGS

DROPS = {
    (1, 2, "share_keys"): "before",
    (2, 2, "collect_masked_vectors"): "after",
    (3, 1, "collect_masked_vectors"): "after",
    (3, 2, "collect_masked_vectors"): "after",
}


def vanish_mod(msg, context, call_next):
    configs = msg.content.config_records.get(RECORD_KEY_CONFIGS)
    stage = configs.get("stage") if configs is not None else None
    key = (int(msg.metadata.group_id), int(context.node_config["partition-id"]), stage)
    when = DROPS.get(key)
    if when == "before":
        raise RuntimeError(f"simulated dropout {key} before the stage")
    reply = call_next(msg, context)
    if when == "after":
        raise RuntimeError(f"simulated dropout {key} after the stage")
    return reply


def make_client_app(*, run_config, node_config):
    factory = _launcher_client_fn(dict(run_config), dict(node_config))
    return ClientApp(client_fn=factory, mods=[vanish_mod, optional_secaggplus_mod])
"""

CHILD = """
import sys
import server.simulation as simulation
from fedprune.cli import main
simulation.CLIENT_APP_FACTORY = "dropout_app:make_client_app"
sys.exit(main(sys.argv[1:]))
"""


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    root = tmp_path_factory.mktemp("dropouts")
    (root / "app").mkdir()
    (root / "app" / "dropout_app.py").write_text(DROPOUT_APP)
    ray_tmp = Path(tempfile.mkdtemp(prefix="fpdo", dir="/tmp"))  # short: Unix socket paths
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env |= {
        "RAY_TMPDIR": str(ray_tmp),
        "FEDPRUNE_HOME": str(root / "home"),
        # the Ray workers import the dropout app (they inherit the environment)
        "PYTHONPATH": os.pathsep.join([str(root / "app"), *sys.path]),
    }
    out, ledgers = root / "out", root / "ledgers"
    try:
        proc = subprocess.run(
            [sys.executable, "-c", CHILD, *ARGS, "--out", str(out), "--ledger-dir", str(ledgers)],
            capture_output=True,
            text=True,
            env=env,
            timeout=1500,
            cwd=root,
        )
        assert (out / "summary.json").exists(), proc.stderr[-4000:]
        yield {
            "proc": proc,
            "summary": json.loads((out / "summary.json").read_text()),
            "ledgers": ledgers,
        }
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)


def test_the_run_finishes_and_the_dropouts_really_happened(run: dict[str, Any]) -> None:
    proc = run["proc"]
    assert proc.returncode == 0, proc.stderr[-4000:]
    for key in ("(1, 2, 'share_keys')", "(2, 2, 'collect_masked_vectors')"):
        assert f"simulated dropout {key}" in proc.stderr, key


def test_rounds_complete_with_survivors_when_secagg_can_reconstruct(
    run: dict[str, Any],
) -> None:
    summary = run["summary"]
    rounds = summary["rounds"]
    assert [r["round"] for r in rounds] == [1, 2, 3]
    one, two, three = rounds
    for skipped in (one, three):
        assert skipped["skipped"] == "secure aggregation halted"
        assert skipped["clients_trained"] == 0 and skipped["update_norm"] is None
    assert (two["clients_trained"], two["skipped"]) == (2, "")
    assert two["failures"] >= 1  # Flower 1.41 lists a node lost at this stage twice
    assert two["update_norm"] > 0
    # the skipped rounds left the model exactly as it was: the warm start, then round 2's
    assert one["test_accuracy"] == summary["public_only_test_accuracy"]
    assert (three["test_loss"], three["test_accuracy"]) == (two["test_loss"], two["test_accuracy"])
    assert summary["test_accuracy"] == two["test_accuracy"]
    assert {k: h["rounds_trained"] for k, h in summary["holders"].items()} == {"0": 1, "1": 1}


def test_each_skipped_round_is_one_clear_log_line(run: dict[str, Any]) -> None:
    lines = run["proc"].stderr.splitlines()
    ours = [line for line in lines if "secure aggregation halted (too few clients" in line]
    assert len(ours) == 2, ours
    assert "round 1:" in ours[0] and "round 3:" in ours[1], ours


def test_every_step_a_vanished_client_took_is_in_its_ledger(run: dict[str, Any]) -> None:
    config = RunConfig.from_flat(run["summary"]["config"])
    store = LedgerStore(run["ledgers"])
    # client 2 trained in rounds 2 and 3 (replies lost); 0 and 1 in all three, though only
    # their round-2 replies were aggregated (rounds 1 and 3 halted; 1's round-3 reply lost)
    rounds_trained = {0: 3, 1: 3, 2: 2}
    for pid, rounds in rounds_trained.items():
        n = len(
            client_partition(
                config.data, seed=config.seed, partition_id=pid, num_partitions=NUM_CLIENTS
            )
        )
        _, per_round = steps_for(
            num_examples=n, batch_size=config.optim.batch_size, epochs=config.federated.local_epochs
        )
        ledger = store.open(
            ledger_holder(config, pid),
            accountant=config.privacy.accountant,
            delta=config.privacy.delta,
        )
        assert ledger.steps == rounds * per_round, pid
        reported = run["summary"]["holders"].get(str(pid))
        if reported is not None:  # what reached the server can only lag the node's own ledger
            assert reported["steps"] <= ledger.steps
            assert reported["epsilon"] <= ledger.epsilon()
    assert "2" not in run["summary"]["holders"]  # none of client 2's replies arrived
