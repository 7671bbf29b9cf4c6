"""``fedprune deploy``: the Flower app under Flower's Deployment Engine.

``fedprune deploy local --nodes N`` starts, on 127.0.0.1, one ``flower-superlink`` (TLS, SuperNode
authentication with registered keys) and N ``flower-supernode`` processes, each with its own
``--node-config`` (partition or records of its own, privacy policy, its *own* ledger directory),
submits the app with ``flwr run``, waits for it, and returns the run summary the ServerApp wrote
to ``<out-dir>/summary.json``. Every process it started is stopped when it is done, on failure or on
Ctrl-C (:class:`fedprune.deploy.processes.ProcessSet`). ``fedprune deploy certs`` makes the CA,
server certificate and node keys of a real deployment (``README.md``, "Deploy on several
machines"); ``fedprune deploy export-partitions`` writes partitions as nodes' own record
directories (``data-dir``).

Only Flower's own executables and its HTTP-based Deployment Engine are used; no transport of
ours. Ports are chosen by the kernel, so parallel deployments do not collide. The Flower CLI's
state (``FLWR_HOME``: connection config, installed apps) lives in the deployment's work
directory, never in the user's ``~/.flwr``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from fedprune.config import RunConfig
from fedprune.data import RECORDS_FILE
from fedprune.deploy.certs import DeploymentKeys, NodeKey, make_certificates, make_node_key
from fedprune.deploy.flat_toml import write_flat_toml
from fedprune.deploy.processes import ProcessSet, Service, free_ports
from fedprune.federated.client_data import (
    NODE_CLIENT_ID,
    NODE_DATA_DIR,
    NODE_NUM_PARTITIONS,
    NODE_PARTITION_ID,
    DirectoryData,
    PartitionData,
    export_partitions,
)
from fedprune.flags import COMMON_FLAGS, FEDERATED_FLAGS, add_flags, overrides
from fedprune.privacy.policy import PrivacyPolicy
from fedprune.summary import RunSummary, format_table
from server.simulation import add_federated_flags, federated_overrides, simulated_node_policy

__all__ = ["APP_DIR", "DeploymentError", "LocalDeployment", "NodeHandle", "register"]

APP_DIR = Path(__file__).resolve().parent.parent
"""The Flower app (the directory holding ``pyproject.toml`` with ``[tool.flwr.app]``)."""

CONNECTION = "fedprune-local"
"""The SuperLink connection's name in the deployment's own ``$FLWR_HOME/config.toml``."""

HOST = "127.0.0.1"

DATA_FLAGS = [f for f in COMMON_FLAGS + FEDERATED_FLAGS if f.key.split(".")[0] in ("seed", "data")]
"""The options that decide a run's partitions (``deploy export-partitions``)."""


class DeploymentError(RuntimeError):
    """A Flower process failed to start or the run failed (the message has its log tail)."""


@dataclass
class NodeHandle:
    """One SuperNode of a local deployment."""

    name: str
    partition_id: int
    key: NodeKey | None
    ledger_dir: Path
    node_config: Path
    data_dir: Path | None = None
    """Its own records (node config ``data-dir``, client id ``partition_id``); ``None``: it
    takes partition ``partition_id`` of the run's dataset."""
    node_id: int | None = None
    service: Service | None = None

    def data_config(self, num_nodes: int) -> dict[str, int | str]:
        """The node-config keys that say which records the node trains on."""
        if self.data_dir is None:
            return {NODE_PARTITION_ID: self.partition_id, NODE_NUM_PARTITIONS: num_nodes}
        return {NODE_DATA_DIR: str(self.data_dir), NODE_CLIENT_ID: self.partition_id}


class LocalDeployment:
    """A SuperLink and ``num_nodes`` SuperNodes on 127.0.0.1, stopped on exit.

    Use as a context manager: entering starts everything (certificates, SuperLink, node
    registration, SuperNodes; see :meth:`start`), :meth:`run` runs the app once, exiting stops
    every process started. ``work_dir`` holds certificates, Flower's state, node configs and
    ``logs/`` (kept after exit). Node ``k`` keeps its ledger in ``ledger_root/node-k`` and has
    ``policy`` with that ledger directory. Node ``k`` trains on its own records in
    ``data_dirs[k]`` when given (:mod:`fedprune.federated.client_data`), else on partition ``k``
    of the run's dataset. ``insecure=True`` runs without TLS and without node
    authentication (anyone who can reach the port could join): loopback experiments only.
    """

    def __init__(
        self,
        work_dir: str | Path,
        *,
        num_nodes: int,
        ledger_root: str | Path,
        policy: PrivacyPolicy,
        data_dirs: Mapping[int, str | Path] | None = None,
        insecure: bool = False,
        app_dir: str | Path = APP_DIR,
        timeout: float = 180.0,
    ) -> None:
        if num_nodes < 2:
            raise ValueError(f"--nodes: expected >= 2 (SecAgg+ needs two), got {num_nodes}")
        self.work_dir = Path(work_dir).resolve()
        self.num_nodes = num_nodes
        self.insecure = insecure
        self.app_dir = _checked_app_dir(Path(app_dir))
        self.timeout = timeout
        self.flwr_home = self.work_dir / "flwr-home"
        self.processes = ProcessSet(self.work_dir / "logs")
        self.keys: DeploymentKeys | None = None
        self.port = 0
        data_dirs = dict(data_dirs or {})
        if not set(data_dirs) <= set(range(num_nodes)):
            raise ValueError(
                f"data_dirs: expected node numbers in [0, {num_nodes}), got {sorted(data_dirs)}"
            )
        self.nodes = [
            NodeHandle(
                name=f"node-{k}",
                partition_id=k,
                key=None,
                ledger_dir=Path(ledger_root).resolve() / f"node-{k}",
                node_config=self.work_dir / "nodes" / f"node-{k}.toml",
                data_dir=Path(data_dirs[k]).resolve() if k in data_dirs else None,
            )
            for k in range(num_nodes)
        ]
        self.policy = policy
        self._bin = _flower_bin_dir()

    # -- lifecycle ------------------------------------------------------------------------------

    def __enter__(self) -> LocalDeployment:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def start(self) -> None:
        """Make keys, start the SuperLink, register the nodes' keys, start and await the nodes.

        Raises
        ------
        DeploymentError
            A process exited or did not come up within ``timeout`` seconds.
        """
        self.work_dir.mkdir(parents=True, exist_ok=True)
        if not self.insecure:
            self.keys = make_certificates(
                self.work_dir / "certs", nodes=[n.name for n in self.nodes], days=2
            )
            for node, key in zip(self.nodes, self.keys.nodes, strict=True):
                node.key = key
        self.port = free_ports(1)[0]
        self._write_connection()
        self._start_superlink()
        for node in self.nodes:
            policy = dataclasses.replace(self.policy, ledger_dir=str(node.ledger_dir))
            write_flat_toml(
                node.node_config,
                {**node.data_config(self.num_nodes), **policy.to_node_config()},
            )
            if node.key is not None:
                node.node_id = self.register(node.key)
            self.start_node(node)
        self.wait_online(self.nodes)

    def close(self) -> None:
        """Stop every process this deployment started (idempotent)."""
        self.processes.stop()

    # -- nodes ----------------------------------------------------------------------------------

    def register(self, key: NodeKey) -> int:
        """Register a SuperNode's public key with the SuperLink; return its node id."""
        reply = self._flwr_json(["supernode", "register", str(key.public_key), CONNECTION])
        return int(reply["node-id"])

    def start_node(self, node: NodeHandle) -> Service:
        """Start (or restart) ``node``'s SuperNode process, authenticating with ``node.key``."""
        argv = [
            str(self._bin / "flower-supernode"),
            "--superlink",
            f"{HOST}:{self.port}",
            "--host",
            HOST,
            "--port",
            str(free_ports(1)[0]),
            "--node-config",
            str(node.node_config),
            "--max-wait-time",
            str(self.timeout),
        ]
        if self.insecure:
            argv.append("--insecure")
        else:
            assert self.keys is not None and node.key is not None
            argv += ["--root-certificates", str(self.keys.ca_cert)]
            argv += ["--auth-supernode-private-key", str(node.key.private_key)]
        node.service = self.processes.start(node.name, argv, env=self._env())
        return node.service

    def stop_node(self, node: NodeHandle) -> None:
        """Stop ``node``'s SuperNode and everything it started (its ledger stays on disk)."""
        self.processes.stop_service(node.name)

    def restart_node(self, node: NodeHandle) -> None:
        """Stop ``node``, start it again with the same key, config and ledger; await it.

        The SuperLink refuses to activate a node it still counts as online, which a stopped
        node stays until it has missed two heartbeats (up to a minute): the restart waits for
        the SuperLink to mark it offline first.
        """
        self.stop_node(node)
        self.wait_offline(node)
        self.start_node(node)
        self.wait_online([node])

    def wait_offline(self, node: NodeHandle) -> None:
        """Wait until the SuperLink no longer lists ``node`` as online (no-op if insecure)."""
        if node.node_id is None:
            return
        deadline = time.monotonic() + self.timeout
        while any(
            int(n["node-id"]) == node.node_id and n["status"] == "online" for n in self.list_nodes()
        ):
            if time.monotonic() > deadline:
                raise DeploymentError(f"{node.name} still online {self.timeout:.0f} s after stop")
            time.sleep(1.0)

    def start_unregistered_node(self, name: str = "intruder") -> Service:
        """Start a SuperNode whose (fresh, valid) key was never registered: it must be refused.

        It reuses node 0's config (as a copied node would); returns the service, which exits.
        """
        if self.keys is None:
            raise ValueError("an insecure deployment has no node authentication to refuse with")
        key = make_node_key(self.work_dir / "certs" / "unregistered", name)
        first = self.nodes[0]
        handle = NodeHandle(name, 0, key, first.ledger_dir, first.node_config, first.data_dir)
        return self.start_node(handle)

    def list_nodes(self) -> list[dict[str, Any]]:
        """The SuperLink's nodes (``flwr supernode ls``: node-id, status, ...)."""
        nodes: list[dict[str, Any]] = self._flwr_json(["supernode", "ls", CONNECTION])["nodes"]
        return nodes

    def wait_online(self, nodes: Sequence[NodeHandle]) -> None:
        """Wait until every node in ``nodes`` is online (or, insecure: that many are)."""
        deadline = time.monotonic() + self.timeout
        while True:
            for node in nodes:
                if node.service is not None and not node.service.alive():
                    raise DeploymentError(
                        f"SuperNode {node.name} exited (code {node.service.process.returncode}):\n"
                        + node.service.log_tail()
                    )
            online = {int(n["node-id"]) for n in self.list_nodes() if n["status"] == "online"}
            if self.insecure:
                if len(online) >= self.num_nodes:
                    return
            elif all(node.node_id in online for node in nodes):
                return
            if time.monotonic() > deadline:
                raise DeploymentError(
                    f"SuperNodes not online after {self.timeout:.0f} s (online: {sorted(online)})"
                )
            time.sleep(1.0)

    # -- runs -----------------------------------------------------------------------------------

    def run(self, flat: dict[str, Any]) -> RunSummary:
        """Run the app once with ``flat`` config overrides; return its summary.

        ``federated.num-clients`` is set to the number of nodes; ``out-dir`` is made absolute
        (the ServerApp writes there, on this machine). The run's ServerApp log is streamed to
        ``logs/run-<id>.log``.

        Raises
        ------
        ValueError
            Bad config, or ``federated.num-clients`` given and not the number of nodes.
        DeploymentError
            The run failed or a Flower process died.
        """
        given = flat.get("federated.num-clients")
        if given is not None and int(given) != self.num_nodes:
            raise ValueError(
                f"--clients {given} but {self.num_nodes} nodes: every node is one client"
            )
        config = RunConfig().replace(**{**flat, "federated.num-clients": self.num_nodes})
        out_dir = Path(config.out_dir).resolve()
        config = config.replace(**{"out-dir": str(out_dir)})
        run_config = write_flat_toml(self.work_dir / "run-config.toml", config.to_flat())
        self.wait_online(self.nodes)  # a node that died since would be missing from the run
        reply = self._flwr_json(
            ["run", str(self.app_dir), CONNECTION, "--run-config", str(run_config)]
        )
        if not reply.get("success"):
            raise DeploymentError(f"flwr run failed: {reply}")
        run_id = int(reply["run-id"])
        log_name = f"run-{run_id}"
        log_argv = [str(self._bin / "flwr"), "log", str(run_id), CONNECTION, "--stream"]
        self.processes.start(log_name, log_argv, env=self._env())
        try:
            status = self._wait_finished(run_id)
        finally:
            self.processes.stop_service(log_name)
        if status != "finished:completed":
            raise DeploymentError(
                f"run {run_id} ended as {status!r}; ServerApp log "
                f"({self.processes.services[log_name].log}):\n"
                + self.processes.services[log_name].log_tail(40)
            )
        return RunSummary.read(out_dir)

    def _wait_finished(self, run_id: int) -> str:
        superlink = self.processes.services["superlink"]
        while True:
            runs = self._flwr_json(["ls", CONNECTION, "--run-id", str(run_id)])["runs"]
            status = str(runs[0]["status"])
            if status.startswith("finished"):
                return status
            if not superlink.alive():
                raise DeploymentError("the SuperLink exited:\n" + superlink.log_tail())
            time.sleep(2.0)

    # -- Flower processes -----------------------------------------------------------------------

    def _start_superlink(self) -> None:
        argv = [
            str(self._bin / "flower-superlink"),
            "--host",
            HOST,
            "--port",
            str(self.port),
            "--disable-runtime-dependency-installation",
        ]
        if self.keys is None:
            argv.append("--insecure")
        else:
            argv += ["--ssl-ca-certfile", str(self.keys.ca_cert)]
            argv += ["--ssl-certfile", str(self.keys.server_cert)]
            argv += ["--ssl-keyfile", str(self.keys.server_key)]
            argv.append("--enable-supernode-auth")
        service = self.processes.start("superlink", argv, env=self._env())
        deadline = time.monotonic() + self.timeout
        while not _accepts(HOST, self.port):
            if not service.alive():
                raise DeploymentError(
                    f"flower-superlink exited (code {service.process.returncode}):\n"
                    + service.log_tail()
                )
            if time.monotonic() > deadline:
                raise DeploymentError(f"flower-superlink not listening after {self.timeout:.0f} s")
            time.sleep(0.5)

    def _write_connection(self) -> None:
        """``$FLWR_HOME/config.toml`` naming this SuperLink (absolute CA path: Flower needs it)."""
        lines = [
            "[superlink]",
            f'default = "{CONNECTION}"',
            "",
            f"[superlink.{CONNECTION}]",
            f'address = "{HOST}:{self.port}"',
        ]
        if self.keys is None:
            lines.append("insecure = true")
        else:
            lines.append(f"root-certificates = {json.dumps(str(self.keys.ca_cert))}")
        self.flwr_home.mkdir(parents=True, exist_ok=True)
        (self.flwr_home / "config.toml").write_text("\n".join(lines) + "\n")

    def _env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
        env["FLWR_HOME"] = str(self.flwr_home)
        env["FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION"] = "1"
        env["PYTHONUNBUFFERED"] = "1"
        # The SuperLink and SuperNodes start Flower's other executables by name.
        env["PATH"] = os.pathsep.join([str(self._bin), env.get("PATH", "")])
        return env

    def _flwr_json(self, args: list[str]) -> dict[str, Any]:
        """Run ``flwr <args> --format json`` and parse its reply (retrying while it cannot
        connect yet, up to ``timeout``)."""
        deadline = time.monotonic() + self.timeout
        while True:
            done = subprocess.run(
                [str(self._bin / "flwr"), *args, "--format", "json"],
                capture_output=True,
                text=True,
                env=self._env(),
                stdin=subprocess.DEVNULL,
                timeout=self.timeout,
            )
            try:
                reply: dict[str, Any] = json.loads(done.stdout)
            except json.JSONDecodeError:
                reply = {"success": False, "error-message": (done.stdout + done.stderr).strip()}
            if reply.get("success") or time.monotonic() > deadline:
                break
            if "unavailable" not in str(reply.get("error-message", "")).lower():
                break
            time.sleep(1.0)
        if not reply.get("success"):
            raise DeploymentError(f"flwr {' '.join(args[:2])}: {reply.get('error-message', reply)}")
        return reply


def _accepts(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(1.0)
        return s.connect_ex((host, port)) == 0


def _flower_bin_dir() -> Path:
    """The directory of Flower's executables (next to this interpreter, or on ``PATH``)."""
    here = Path(sys.executable).parent
    if (here / "flower-superlink").exists():
        return here
    found = shutil.which("flower-superlink")
    if found is None:
        raise FileNotFoundError("flower-superlink not found (install flwr into this environment)")
    return Path(found).parent


def _checked_app_dir(app_dir: Path) -> Path:
    pyproject = app_dir / "pyproject.toml"
    if not pyproject.exists() or "[tool.flwr.app]" not in pyproject.read_text():
        raise FileNotFoundError(
            f"no Flower app in {app_dir} (pyproject.toml with [tool.flwr.app]): "
            "fedprune deploy runs from a source checkout; pass --app DIR"
        )
    return app_dir.resolve()


# -- command line -----------------------------------------------------------------------------


def _node_data_dirs(config: RunConfig, root: str, num_nodes: int) -> dict[int, Path]:
    """``root/node-k`` for every node, each checked to hold records for the run's task."""
    dirs = {k: Path(root) / f"node-{k}" for k in range(num_nodes)}
    for k, directory in dirs.items():
        DirectoryData(directory.resolve(), client_id=k).load(config)
    return dirs


def _local(args: argparse.Namespace) -> int:
    flat = federated_overrides(args)
    config = RunConfig().replace(**flat)
    policy = simulated_node_policy(config, max_epsilon=args.node_max_epsilon)
    ledger_root = args.ledger_dir or str(policy.ledger_path / "deploy-local")
    data_dirs = _node_data_dirs(config, args.data_dirs, args.nodes) if args.data_dirs else None
    work = Path(tempfile.mkdtemp(prefix="fedprune-deploy-"))
    try:
        deployment = LocalDeployment(
            work,
            num_nodes=args.nodes,
            ledger_root=ledger_root,
            policy=policy,
            data_dirs=data_dirs,
            insecure=args.insecure,
            app_dir=args.app,
        )
    except BaseException:
        work.rmdir()  # nothing was started
        raise
    try:
        with deployment:
            if not args.quiet:
                security = "insecure" if args.insecure else "TLS, node authentication"
                data = f"records in {args.data_dirs}/node-k, " if args.data_dirs else ""
                print(
                    f"SuperLink {HOST}:{deployment.port} ({security}), {args.nodes} SuperNodes "
                    f"({data}ledgers in {ledger_root}/node-k); logs in {work / 'logs'}"
                )
            summary = deployment.run(flat)
    finally:
        # the deployment's private keys and Flower state go; its logs stay
        for private in ("certs", "flwr-home"):
            shutil.rmtree(work / private, ignore_errors=True)
    if not args.quiet:
        print(format_table(summary))
    print(f"summary: {Path(config.out_dir).resolve() / 'summary.json'}")
    return 0


def _export_partitions(args: argparse.Namespace) -> int:
    if args.nodes < 1:
        raise ValueError(f"--nodes: expected >= 1, got {args.nodes}")
    flat = overrides(args, DATA_FLAGS)
    config = RunConfig().replace(**{**flat, "federated.num-clients": args.nodes})
    for k, directory in enumerate(export_partitions(config, args.out)):
        n = len(PartitionData(k, args.nodes).load(config))
        print(f"node {k}: {n} records of {config.data.dataset} in {directory / RECORDS_FILE}")
    root = Path(args.out).resolve()
    print(f"give node k: --node-config \"data-dir='{root}/node-k' client-id=k\" (and its policy)")
    return 0


def _certs(args: argparse.Namespace) -> int:
    keys = make_certificates(args.out, hosts=args.host, nodes=args.nodes, days=args.days)
    print(f"CA certificate (give to every SuperNode and flwr CLI): {keys.ca_cert}")
    print(f"SuperLink certificate and key: {keys.server_cert} {keys.server_key}")
    for node in keys.nodes:
        print(f"{node.name}: private key {node.private_key} (stays on the node), {node.public_key}")
    print(f"keep {keys.ca_key} offline: whoever has it can impersonate the SuperLink")
    return 0


def register(subparsers: Any) -> None:
    """Add ``deploy`` to the ``fedprune`` command line (the ``fedprune.commands`` entry point)."""
    deploy = subparsers.add_parser(
        "deploy",
        help="Flower Deployment Engine: certificates, local multi-process deployment",
        description="Run the app under Flower's Deployment Engine (see the README, 'Deploy on "
        "several machines').",
    )
    sub = deploy.add_subparsers(dest="deploy_command", required=True, metavar="WHAT")

    local = sub.add_parser(
        "local",
        help="a TLS SuperLink and N authenticated SuperNodes on 127.0.0.1, one run",
        description="Starts flower-superlink (TLS, node authentication) and N flower-supernode "
        "processes on 127.0.0.1 (free ports), each node with its own partition, privacy policy "
        "and ledger directory; runs the app with flwr run; writes OUT/summary.json; stops "
        "every process it started.",
    )
    local.add_argument("--nodes", type=int, default=3, help="number of SuperNodes (default 3)")
    add_federated_flags(local, [f for f in COMMON_FLAGS + FEDERATED_FLAGS if f.flag != "--clients"])
    local.add_argument(
        "--insecure",
        action="store_true",
        help="no TLS and no node authentication (loopback experiments only)",
    )
    local.add_argument(
        "--ledger-dir",
        default="",
        help="node k keeps its ledger in LEDGER_DIR/node-k (default "
        "$FEDPRUNE_HOME/ledgers/deploy-local; persistent across runs)",
    )
    local.add_argument(
        "--node-max-epsilon",
        type=float,
        default=None,
        help=f"each node's budget over all runs (default {PrivacyPolicy().max_epsilon:g})",
    )
    local.add_argument(
        "--data-dirs",
        default="",
        metavar="DIR",
        help="node k trains on its own records in DIR/node-k/records.npz (node config data-dir; "
        "make them with 'fedprune deploy export-partitions') instead of partition k",
    )
    local.add_argument("--app", default=str(APP_DIR), help="the Flower app directory")
    local.set_defaults(func=_local)

    export = sub.add_parser(
        "export-partitions",
        help="write partition k of the dataset as OUT/node-k/records.npz (a node's own data)",
        description="Splits the dataset as a run with these settings would (public part kept "
        "out), and writes client k's partition as OUT/node-k/records.npz: the directory a "
        "SuperNode is pointed at with --node-config \"data-dir='...' client-id=k\". Refuses "
        "to overwrite existing records.",
    )
    export.add_argument("--nodes", type=int, required=True, help="number of nodes (partitions)")
    export.add_argument("--out", required=True, metavar="DIR", help="directory for node-k/")
    add_flags(export, DATA_FLAGS, defaults=RunConfig().to_flat())
    export.set_defaults(func=_export_partitions)

    certs = sub.add_parser(
        "certs",
        help="make a CA, a SuperLink TLS certificate and SuperNode keys",
        description="openssl and ssh-keygen: OUT/ca.crt, ca.key, server.pem, server.key "
        "(SAN: each --host, 127.0.0.1, localhost) and OUT/nodes/<name>{,.pub} (ECDSA P-384, "
        "OpenSSH). Refuses to overwrite existing files.",
    )
    certs.add_argument("--out", required=True, help="directory for the files")
    certs.add_argument(
        "--host",
        action="append",
        default=[],
        help="a name or IP address the SuperNodes use to reach the SuperLink (repeatable)",
    )
    certs.add_argument("--nodes", type=int, default=0, help="number of node keys to make")
    certs.add_argument("--days", type=int, default=365, help="certificate validity (days)")
    certs.set_defaults(func=_certs)
