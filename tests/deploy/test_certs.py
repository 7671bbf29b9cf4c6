"""Deployment keys: a CA, a SuperLink certificate that TLS clients accept, ECDSA node keys."""

from __future__ import annotations

import ssl
import subprocess
from pathlib import Path

import pytest

from fedprune.deploy.certs import make_certificates, make_node_key, subject_alt_names


def test_subject_alt_names_always_cover_loopback() -> None:
    assert subject_alt_names(["Example.org", "10.0.0.2", "::1"]) == [
        "DNS:example.org",
        "IP:10.0.0.2",
        "IP:::1",
        "IP:127.0.0.1",
        "DNS:localhost",
    ]
    assert subject_alt_names(["127.0.0.1"]) == ["IP:127.0.0.1", "DNS:localhost"]


@pytest.mark.parametrize("host", ["bad host", "a,b", "", "-x.org", "x" * 64 + ".org"])
def test_a_bad_host_is_named(host: str) -> None:
    with pytest.raises(ValueError, match="not an IP address or DNS name"):
        subject_alt_names([host])


def _text(cert: Path) -> str:
    return subprocess.run(
        ["openssl", "x509", "-in", str(cert), "-noout", "-text"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout


def test_server_certificate_is_signed_by_the_ca_for_the_hosts(tmp_path: Path) -> None:
    keys = make_certificates(tmp_path / "pki", hosts=["superlink.example.org", "10.1.2.3"], nodes=2)
    verify = subprocess.run(
        ["openssl", "verify", "-CAfile", str(keys.ca_cert), str(keys.server_cert)],
        capture_output=True,
        text=True,
    )
    assert verify.returncode == 0, verify.stderr
    text = _text(keys.server_cert)
    assert (
        "DNS:superlink.example.org, IP Address:10.1.2.3, IP Address:127.0.0.1, DNS:localhost"
        in text
    )
    assert "TLS Web Server Authentication" in text and "CA:FALSE" in text
    assert "CA:TRUE" in _text(keys.ca_cert)
    # a TLS client trusting only the CA accepts the certificate for every name in it
    context = ssl.create_default_context(cafile=str(keys.ca_cert))
    context.load_cert_chain(keys.server_cert, keys.server_key)  # key matches the certificate
    for path in (keys.ca_key, keys.server_key, *(n.private_key for n in keys.nodes)):
        assert path.stat().st_mode & 0o777 == 0o600, path
    # no request or extension file left behind
    assert sorted(p.name for p in keys.directory.iterdir()) == [
        "ca.crt",
        "ca.key",
        "nodes",
        "server.key",
        "server.pem",
    ]


def test_node_keys_are_ecdsa_p384_in_openssh_format(tmp_path: Path) -> None:
    keys = make_certificates(tmp_path, nodes=["hospital-a", "hospital-b"])
    assert [n.name for n in keys.nodes] == ["hospital-a", "hospital-b"]
    publics = set()
    for node in keys.nodes:
        public = node.public_key.read_text()
        assert public.startswith("ecdsa-sha2-nistp384 ") and public.strip().endswith(node.name)
        assert node.private_key.read_text().startswith("-----BEGIN OPENSSH PRIVATE KEY-----")
        publics.add(public)
    assert len(publics) == 2


def test_nothing_existing_is_replaced(tmp_path: Path) -> None:
    keys = make_certificates(tmp_path, nodes=1)
    ca = keys.ca_cert.read_bytes()
    with pytest.raises(ValueError, match="already exists"):
        make_certificates(tmp_path)
    assert keys.ca_cert.read_bytes() == ca
    with pytest.raises(ValueError, match="already exists"):
        make_node_key(tmp_path / "nodes", "node-0")
    extra = make_node_key(tmp_path / "nodes", "node-1")
    assert extra.public_key.exists()


@pytest.mark.parametrize("name", ["../x", "a b", ""])
def test_a_bad_node_name_is_refused(tmp_path: Path, name: str) -> None:
    with pytest.raises(ValueError, match="node name"):
        make_certificates(tmp_path, nodes=[name])
    assert not list(tmp_path.iterdir())  # refused before anything was written
