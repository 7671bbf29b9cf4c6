"""Certificates and keys of a Flower deployment, made with the standard tools (openssl, ssh-keygen).

:func:`make_certificates` writes, into one directory:

* ``ca.crt`` / ``ca.key``: a private certificate authority (ECDSA P-384). ``ca.crt`` goes to
  every SuperNode (``--root-certificates``) and every ``flwr`` CLI; ``ca.key`` never leaves the
  machine that made it.
* ``server.pem`` / ``server.key``: the SuperLink's TLS certificate, signed by the CA, whose
  subjectAltName lists the given hosts plus ``IP:127.0.0.1`` and ``DNS:localhost`` (without the
  loopback entries Flower's own SuperExec and local CLIs cannot connect).
* ``nodes/<name>`` / ``nodes/<name>.pub``: SuperNode authentication keys (ECDSA P-384 in OpenSSH
  format; Flower refuses Ed25519). On real machines each node should make its own key (the
  same ``ssh-keygen`` command) and hand over only the ``.pub`` file.

Private keys are written with mode 0600. Nothing existing is overwritten: a directory that
already holds one of the files is refused, so a CA in use cannot be replaced by accident.
"""

from __future__ import annotations

import ipaddress
import os
import re
import secrets
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = ["DeploymentKeys", "NodeKey", "make_certificates", "make_node_key", "subject_alt_names"]

LOOPBACK_NAMES = ("IP:127.0.0.1", "DNS:localhost")
"""Always in the server certificate: Flower's SuperExec and local CLIs connect over loopback."""

_LABEL = r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_HOSTNAME = re.compile(rf"^(?=.{{1,253}}$)(\*\.)?{_LABEL}(\.{_LABEL})*$")
_NODE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


@dataclass(frozen=True)
class NodeKey:
    """One SuperNode's authentication key pair (OpenSSH format)."""

    name: str
    private_key: Path
    public_key: Path


@dataclass(frozen=True)
class DeploymentKeys:
    """The files :func:`make_certificates` wrote (absolute paths)."""

    directory: Path
    ca_cert: Path
    ca_key: Path
    server_cert: Path
    server_key: Path
    nodes: tuple[NodeKey, ...]


def subject_alt_names(hosts: Sequence[str]) -> list[str]:
    """The server certificate's SAN entries: each host as ``IP:`` or ``DNS:``, then loopback.

    Raises
    ------
    ValueError
        A host is neither an IP address nor a valid DNS name.
    """
    names: list[str] = []
    for host in hosts:
        try:
            entry = f"IP:{ipaddress.ip_address(host)}"
        except ValueError:
            if not _HOSTNAME.match(host):
                raise ValueError(f"host {host!r}: not an IP address or DNS name") from None
            entry = f"DNS:{host.lower()}"
        if entry not in names:
            names.append(entry)
    return names + [n for n in LOOPBACK_NAMES if n not in names]


def make_certificates(
    directory: str | Path,
    *,
    hosts: Sequence[str] = (),
    nodes: int | Sequence[str] = 0,
    days: int = 365,
) -> DeploymentKeys:
    """Make a CA, a SuperLink certificate for ``hosts`` (plus loopback) and node keys.

    ``nodes`` is a number of keys (named ``node-0``, ``node-1``, ...) or their names. ``days``
    is the certificates' validity.

    Raises
    ------
    ValueError
        Bad host or node name, ``days < 1``, or one of the files already exists.
    FileNotFoundError
        ``openssl`` or ``ssh-keygen`` is not installed.
    """
    if days < 1:
        raise ValueError(f"days: expected >= 1, got {days}")
    san = subject_alt_names(hosts)
    names = [f"node-{i}" for i in range(nodes)] if isinstance(nodes, int) else list(nodes)
    out = Path(directory).resolve()
    keys = DeploymentKeys(
        directory=out,
        ca_cert=out / "ca.crt",
        ca_key=out / "ca.key",
        server_cert=out / "server.pem",
        server_key=out / "server.key",
        nodes=tuple(_node_paths(out / "nodes", name) for name in names),
    )
    existing = [
        p for p in (keys.ca_cert, keys.ca_key, keys.server_cert, keys.server_key) if p.exists()
    ]
    if existing:
        raise ValueError(f"{existing[0]} already exists (refusing to replace certificates)")
    for node in keys.nodes:
        if node.private_key.exists() or node.public_key.exists():
            raise ValueError(f"{node.private_key} already exists (refusing to replace a key)")
    out.mkdir(parents=True, exist_ok=True)
    _make_ca(keys, days)
    _make_server_cert(keys, san, days)
    for node in keys.nodes:
        _ssh_keygen(node)
    return keys


def make_node_key(directory: str | Path, name: str) -> NodeKey:
    """One SuperNode key pair ``directory/name`` and ``directory/name.pub`` (ECDSA P-384).

    Raises
    ------
    ValueError
        Bad name, or the key already exists.
    """
    node = _node_paths(Path(directory).resolve(), name)
    if node.private_key.exists() or node.public_key.exists():
        raise ValueError(f"{node.private_key} already exists (refusing to replace a key)")
    _ssh_keygen(node)
    return node


def _node_paths(directory: Path, name: str) -> NodeKey:
    if not _NODE_NAME.match(name):
        raise ValueError(f"node name {name!r}: use letters, digits, '.', '_' or '-'")
    return NodeKey(name, directory / name, directory / f"{name}.pub")


def _make_ca(keys: DeploymentKeys, days: int) -> None:
    _tool(
        "openssl", "req", "-x509", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-384",
        "-nodes", "-keyout", str(keys.ca_key), "-out", str(keys.ca_cert), "-days", str(days),
        "-subj", "/CN=fedprune deployment CA",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
    )  # fmt: skip
    os.chmod(keys.ca_key, 0o600)


def _make_server_cert(keys: DeploymentKeys, san: list[str], days: int) -> None:
    """Request without extensions, then sign applying them (openssl drops a request's SAN)."""
    csr = keys.directory / "server.csr"
    extensions = keys.directory / "server.ext"
    common_name = san[0].split(":", 1)[1]
    extensions.write_text(
        f"subjectAltName = {', '.join(san)}\n"
        "basicConstraints = critical, CA:FALSE\n"
        "keyUsage = critical, digitalSignature, keyAgreement\n"
        "extendedKeyUsage = serverAuth\n"
    )
    try:
        _tool(
            "openssl", "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-384",
            "-nodes", "-keyout", str(keys.server_key), "-out", str(csr),
            "-subj", f"/CN={common_name}",
        )  # fmt: skip
        os.chmod(keys.server_key, 0o600)
        _tool(
            "openssl", "x509", "-req", "-in", str(csr), "-CA", str(keys.ca_cert),
            "-CAkey", str(keys.ca_key), "-set_serial", f"0x{secrets.token_hex(16)}",
            "-out", str(keys.server_cert), "-days", str(days), "-sha384",
            "-extfile", str(extensions),
        )  # fmt: skip
    finally:
        csr.unlink(missing_ok=True)
        extensions.unlink(missing_ok=True)


def _ssh_keygen(node: NodeKey) -> None:
    node.private_key.parent.mkdir(parents=True, exist_ok=True)
    _tool(
        "ssh-keygen", "-q", "-t", "ecdsa", "-b", "384", "-N", "", "-C", node.name,
        "-f", str(node.private_key),
    )  # fmt: skip
    os.chmod(node.private_key, 0o600)


def _tool(*argv: str) -> None:
    """Run one openssl/ssh-keygen command; its stderr becomes the error message."""
    if shutil.which(argv[0]) is None:
        raise FileNotFoundError(f"{argv[0]} is not installed (needed to make deployment keys)")
    done = subprocess.run(argv, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    if done.returncode != 0:
        detail = (done.stderr or done.stdout).strip().splitlines()
        raise RuntimeError(
            f"{argv[0]} {argv[1]} failed: {detail[-1] if detail else done.returncode}"
        )
