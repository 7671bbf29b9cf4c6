"""Local service processes that are always stopped: own sessions, a marker, stop by PID.

:class:`ProcessSet` starts long-running commands (a SuperLink, SuperNodes) each in its own
session (process group) with stdout/stderr in a log file, and an environment marker
``FEDPRUNE_PROCESS_SET=<random set id>:<service name>`` that every descendant inherits.
:meth:`ProcessSet.stop` (and :meth:`ProcessSet.stop_service` for one service) signals each
started group while its leader is alive, then every other process that carries the marker
(descendants that moved to a session of their own, as Flower's SuperExec and app processes do),
first SIGTERM, then SIGKILL after ``grace`` seconds. It never signals a process it cannot tie
to this set: a PID is only signalled while it is an unreaped child, or while its ``/proc``
environment holds the marker (Linux; elsewhere only the started groups are signalled). Used
as a context manager, the set is stopped on any exit, including ``KeyboardInterrupt``.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import socket
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

__all__ = ["MARKER_VARIABLE", "ProcessSet", "Service", "end_process_group", "free_ports"]

MARKER_VARIABLE = "FEDPRUNE_PROCESS_SET"
"""Environment variable naming the set a process belongs to (inherited by its descendants)."""


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """``count`` distinct TCP ports that were free on ``host`` a moment ago.

    Each is chosen by the kernel (bind to port 0), so parallel callers do not pick the same
    ports; all sockets are held open until every port is chosen (no duplicates in one call).
    A port may still be taken between this call and its use: callers start the service and
    check that it came up.
    """
    sockets = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((host, 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


@dataclass
class Service:
    """One started command: its name, process, log file."""

    name: str
    process: subprocess.Popen[bytes]
    log: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def log_tail(self, lines: int = 20) -> str:
        """The last ``lines`` lines of the service's log (empty if none yet)."""
        try:
            text = self.log.read_text(errors="replace")
        except FileNotFoundError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


class ProcessSet:
    """Services started together and stopped together (see the module docstring)."""

    def __init__(self, log_dir: str | Path, *, grace: float = 10.0) -> None:
        self.log_dir = Path(log_dir)
        self.grace = grace
        self.marker = secrets.token_hex(8)
        self.services: dict[str, Service] = {}

    def start(
        self,
        name: str,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        cwd: str | Path | None = None,
    ) -> Service:
        """Start ``argv`` as service ``name`` (unique while it runs), logging to ``<name>.log``.

        Raises
        ------
        ValueError
            A running service already has this name.
        FileNotFoundError
            The program does not exist.
        """
        old = self.services.get(name)
        if old is not None and old.alive():
            raise ValueError(f"service {name!r} is already running (pid {old.pid})")
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log = self.log_dir / f"{name}.log"
        environment = {
            **(dict(env) if env is not None else os.environ),
            MARKER_VARIABLE: f"{self.marker}:{name}",
        }
        with log.open("ab") as out:
            process = subprocess.Popen(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=environment,
                cwd=cwd,
                start_new_session=True,
            )
        service = Service(name, process, log)
        self.services[name] = service
        return service

    def stop_service(self, name: str) -> None:
        """Stop one service, its process group and its marked descendants."""
        self._stop([self.services[name]], name)

    def stop(self) -> None:
        """Stop every service and every process carrying this set's marker; wait for them."""
        self._stop(list(self.services.values()), None)

    def marked_pids(self, name: str | None = None) -> list[int]:
        """Live processes (not zombies) carrying this set's marker (of service ``name``)."""
        prefix = f"{MARKER_VARIABLE}={self.marker}:".encode()
        found = []
        for entry in Path("/proc").glob("[0-9]*"):
            try:
                values = [
                    v for v in (entry / "environ").read_bytes().split(b"\0") if v.startswith(prefix)
                ]
                if not values or (name is not None and values[0] != prefix + name.encode()):
                    continue
                state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
            except (OSError, IndexError):
                continue
            if state != "Z" and int(entry.name) != os.getpid():
                found.append(int(entry.name))
        return found

    def _stop(self, services: list[Service], name: str | None) -> None:
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for service in services:
                _signal_group(service, sig)
            for pid in self.marked_pids(name):
                _signal(pid, sig)
            deadline = time.monotonic() + self.grace
            while time.monotonic() < deadline and (
                any(s.alive() for s in services) or self.marked_pids(name)
            ):
                time.sleep(0.1)
        for service in services:
            with contextlib.suppress(subprocess.TimeoutExpired):  # SIGKILL was sent
                service.process.wait(timeout=self.grace)

    def __enter__(self) -> ProcessSet:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def _signal_group(service: Service, sig: signal.Signals) -> None:
    """Signal the service's process group (its own session: PGID = PID) while the leader is
    unreaped (so the PID cannot have been reused); later, markers find the group's members."""
    if service.process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(service.pid, sig)


def _signal(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, sig)


def end_process_group(pgid: int, *, grace: float = 5.0) -> None:
    """Terminate what is left of process group ``pgid`` (a child started in its own session,
    so ``pgid`` is its PID): SIGTERM, up to ``grace`` seconds to exit, then SIGKILL."""
    for sig, wait_s in ((signal.SIGTERM, grace), (signal.SIGKILL, 0.0)):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            try:
                os.killpg(pgid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.2)
