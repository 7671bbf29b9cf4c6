"""A federated compare cell (own session) ends with its parent, even one killed by SIGKILL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).parents[2]

# The "cell": watches its parent like server.compare_cell does, starts a grandchild in its own
# process group (as Ray's workers are), reports both pids, then would run forever.
CELL = textwrap.dedent(
    """
    import os, subprocess, sys, time
    from server.compare_cell import _end_with_parent
    _end_with_parent(int(sys.argv[1]), poll_s=0.1)
    grandchild = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    print(os.getpid(), grandchild.pid, flush=True)
    time.sleep(600)
    """
)
# The "compare" parent: starts the cell in a new session, passes its pid, waits.
PARENT = textwrap.dedent(
    """
    import os, subprocess, sys, time
    cell = subprocess.Popen(
        [sys.executable, "-c", sys.argv[1], str(os.getpid())], start_new_session=True
    )
    time.sleep(600)
    """
)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie (exited, not yet reaped by init) counts as gone
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except FileNotFoundError:
        return False


def test_cell_and_its_children_end_when_the_parent_is_killed() -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    parent = subprocess.Popen(
        [sys.executable, "-c", PARENT, CELL], env=env, stdout=subprocess.PIPE, text=True
    )
    try:
        assert parent.stdout is not None
        cell_pid, grandchild_pid = (int(p) for p in parent.stdout.readline().split())
        assert _alive(cell_pid) and _alive(grandchild_pid)
        parent.send_signal(signal.SIGKILL)
        parent.wait()
        deadline = time.monotonic() + 60
        while (_alive(cell_pid) or _alive(grandchild_pid)) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not _alive(cell_pid), "the cell outlived its killed parent"
        assert not _alive(grandchild_pid), "the cell's child outlived it"
    finally:
        for pid in (locals().get("cell_pid"), locals().get("grandchild_pid")):
            if pid and _alive(pid):
                os.kill(pid, signal.SIGKILL)
