"""A federated cell of ``fedprune compare`` through the app's runner (one Ray simulation)."""

from __future__ import annotations

from pathlib import Path

import pytest

from fedprune.compare import CELL_RUNNERS, apply_sets, load_preset, run_compare
from server.compare_cell import register_cell_runner

pytestmark = pytest.mark.slow

PRESET = """
[base]
"data.dataset" = "digits"
"model" = "mlp"
"warmup.epochs" = 1
"federated.num-rounds" = 1
"federated.num-clients" = 2
"federated.local-epochs" = 1
"secagg.enabled" = false
[grid]
setting = ["federated-iid"]
strategy = ["magnitude"]
density = [0.1]
epsilon = [2.0]
"""


def test_federated_cell_runs_in_its_own_process_and_is_resumed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    register_cell_runner()
    register_cell_runner()  # idempotent (the CLI may load the app's commands more than once)
    assert "federated" in CELL_RUNNERS.names()
    path = tmp_path / "fed.toml"
    path.write_text(PRESET)
    preset = apply_sets(load_preset(path), [])
    out = tmp_path / "out"
    (row,) = run_compare(preset, out, progress=False)
    assert row["status"] == "ok", row["error"]
    assert row["setting"] == "federated-iid" and row["partition"] == "iid"
    assert row["rounds_completed"] == 1 and row["num_clients"] == 2
    assert row["epsilon"] == pytest.approx(2.0, rel=0.05)
    assert row["upload_bytes"] == 1 * 2 * row["trained_coordinates"] * 4
    cell = out / "cells" / row["cell"]
    assert (cell / "summary.json").exists() and (cell / "ledgers").is_dir()
    # Done: the same grid again launches nothing (the summary is not rewritten).
    stamp = (cell / "summary.json").stat().st_mtime_ns
    assert run_compare(preset, out, progress=False) == [row]
    assert (cell / "summary.json").stat().st_mtime_ns == stamp
