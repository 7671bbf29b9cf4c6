"""``fedprune deploy``: its command line refuses bad input before starting anything."""

from __future__ import annotations

import argparse
import os
import subprocess
from pathlib import Path

import pytest

from fedprune.config import RunConfig
from fedprune.federated.client_data import DirectoryData, client_partition
from server.deployment import register


def _parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="fedprune")
    register(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(["deploy", *argv])


def test_certs_writes_a_ca_server_certificate_and_node_keys(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = _parse("certs", "--out", str(tmp_path / "pki"), "--host", "10.0.0.1", "--nodes", "2")
    assert args.func(args) == 0
    printed = capsys.readouterr().out
    assert str(tmp_path / "pki" / "ca.crt") in printed and "ca.key" in printed
    text = subprocess.run(
        ["openssl", "x509", "-in", str(tmp_path / "pki" / "server.pem"), "-noout", "-ext",
         "subjectAltName"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    assert "IP Address:10.0.0.1, IP Address:127.0.0.1, DNS:localhost" in text
    assert sorted(p.name for p in (tmp_path / "pki" / "nodes").iterdir()) == [
        "node-0",
        "node-0.pub",
        "node-1",
        "node-1.pub",
    ]


def test_certs_refuses_a_bad_host(tmp_path: Path) -> None:
    args = _parse("certs", "--out", str(tmp_path / "pki"), "--host", "not a host")
    with pytest.raises(ValueError, match="not a host"):
        args.func(args)
    assert not (tmp_path / "pki").exists()


def test_local_needs_two_nodes_and_leaves_nothing_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", None)  # re-read TMPDIR
    args = _parse("local", "--nodes", "1", "--out", str(tmp_path / "out"))
    with pytest.raises(ValueError, match="--nodes: expected >= 2"):
        args.func(args)
    assert sorted(os.listdir(tmp_path)) == []


def test_local_refuses_a_directory_without_the_app(tmp_path: Path) -> None:
    args = _parse("local", "--app", str(tmp_path), "--out", str(tmp_path / "out"))
    with pytest.raises(FileNotFoundError, match=r"no Flower app in .*pass --app DIR"):
        args.func(args)


def test_export_partitions_writes_one_records_dir_per_node(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "silos"
    args = _parse("export-partitions", "--nodes", "3", "--out", str(out), "--seed", "1")
    assert args.func(args) == 0
    printed = capsys.readouterr().out
    config = RunConfig().replace(**{"seed": 1, "federated.num-clients": 3})
    for k in range(3):
        n = len(client_partition(config.data, seed=1, partition_id=k, num_partitions=3))
        assert f"node {k}: {n} records of digits in {out / f'node-{k}' / 'records.npz'}" in printed
        assert len(DirectoryData(out / f"node-{k}", k).load(config)) == n
    assert f"data-dir='{out.resolve()}/node-k' client-id=k" in printed
    with pytest.raises(ValueError, match="refusing to overwrite"):
        args.func(args)


def test_local_with_data_dirs_checks_every_node_dir_before_starting_anything(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TMPDIR", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", None)  # re-read TMPDIR
    export = _parse("export-partitions", "--nodes", "2", "--out", str(tmp_path / "silos"))
    export.func(export)
    args = _parse("local", "--nodes", "3", "--data-dirs", str(tmp_path / "silos"))
    with pytest.raises(FileNotFoundError, match=r"data-dir '.*/silos/node-2': no such directory"):
        args.func(args)
    assert os.listdir(tmp_path / "tmp") == []
