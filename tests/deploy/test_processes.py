"""ProcessSet: all it started is stopped (also descendants in own sessions), nothing else."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fedprune.deploy.processes import ProcessSet, free_ports

# A service as Flower's are: one child in its process group, one that detaches into a session of
# its own (SuperExec does), and, optionally, a stubborn main process that ignores SIGTERM.
TREE = """
import signal, subprocess, sys, time
if sys.argv[1] == "stubborn":
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
sleep = [sys.executable, "-c", "import time; time.sleep(600)"]
detached = subprocess.Popen(sleep, start_new_session=True)
grouped = subprocess.Popen(sleep)
print("PIDS", detached.pid, grouped.pid, flush=True)
time.sleep(600)
"""


def _gone(pid: int) -> bool:
    """Not running: no such process, or a zombie waiting for a parent that is not ours."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] == "Z"


def _pid_lines(text: str) -> list[str]:
    return [ln for ln in text.splitlines() if ln.startswith("PIDS")]


def _start_tree(processes: ProcessSet, name: str, mode: str = "polite") -> list[int]:
    """Start TREE as service ``name``; its three PIDs (the log is appended to on restarts)."""
    log = processes.log_dir / f"{name}.log"
    before = len(_pid_lines(log.read_text())) if log.exists() else 0
    service = processes.start(name, [sys.executable, "-c", TREE, mode])
    deadline = time.monotonic() + 60
    while len(_pid_lines(service.log_tail())) <= before:
        assert service.alive(), service.log_tail()
        assert time.monotonic() < deadline, "the tree did not start"
        time.sleep(0.1)
    return [service.pid, *map(int, _pid_lines(service.log_tail())[-1].split()[1:])]


def _wait_gone(pids: list[int], seconds: float = 10.0) -> bool:
    deadline = time.monotonic() + seconds
    while not all(_gone(p) for p in pids):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def test_stop_ends_every_descendant_and_spares_other_processes(tmp_path: Path) -> None:
    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    try:
        processes = ProcessSet(tmp_path / "logs", grace=1.0)
        first = _start_tree(processes, "a")
        second = _start_tree(processes, "b", "stubborn")
        assert set(first[1:] + second[1:]) <= set(processes.marked_pids())
        assert bystander.pid not in processes.marked_pids()
        processes.stop()
        assert _wait_gone(first + second)
        assert processes.marked_pids() == []
        assert bystander.poll() is None  # not ours: untouched
    finally:
        bystander.kill()
        bystander.wait()


def test_stop_service_ends_one_service_only(tmp_path: Path) -> None:
    with ProcessSet(tmp_path / "logs", grace=1.0) as processes:
        first = _start_tree(processes, "a")
        second = _start_tree(processes, "b")
        processes.stop_service("a")
        assert _wait_gone(first)
        assert not any(_gone(p) for p in second)
        # a stopped service can be started again under its name
        third = _start_tree(processes, "a")
        assert not any(_gone(p) for p in third)
    assert _wait_gone(second + third)


def test_leaving_the_block_on_ctrl_c_stops_everything(tmp_path: Path) -> None:
    pids: list[int] = []
    with pytest.raises(KeyboardInterrupt), ProcessSet(tmp_path / "logs", grace=1.0) as processes:
        pids = _start_tree(processes, "a")
        raise KeyboardInterrupt
    assert pids and _wait_gone(pids)


def test_a_running_name_cannot_be_started_twice(tmp_path: Path) -> None:
    with ProcessSet(tmp_path / "logs") as processes:
        processes.start("a", [sys.executable, "-c", "import time; time.sleep(600)"])
        with pytest.raises(ValueError, match="already running"):
            processes.start("a", [sys.executable, "-c", "pass"])


def test_free_ports_are_distinct_and_bindable() -> None:
    import socket

    ports = free_ports(20)
    assert len(set(ports)) == 20
    for port in ports[:3]:
        with socket.socket() as s:
            s.bind(("127.0.0.1", port))


def test_the_marker_is_inherited_not_global(tmp_path: Path) -> None:
    with ProcessSet(tmp_path / "logs") as processes:
        service = processes.start(
            "env", [sys.executable, "-c", "import os; print(os.environ['FEDPRUNE_PROCESS_SET'])"]
        )
        service.process.wait(timeout=60)
        assert service.log_tail().strip() == f"{processes.marker}:env"
    assert "FEDPRUNE_PROCESS_SET" not in os.environ
