"""The built wheel works on its own: it imports from where it is installed, ``fedprune run``
comes from its entry point, and a tiny federated run writes its summary. Also: commands
contributed twice (two installed copies) are registered once, and a broken one is skipped."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import fedprune.cli
from fedprune.cli import build_parser
from fedprune.deploy.processes import end_process_group

ROOT = Path(__file__).resolve().parents[2]


class _FakeEntryPoint:
    def __init__(self, name: str, origin: str, calls: list[str]) -> None:
        self.name, self.origin, self.calls = name, origin, calls

    def load(self) -> Any:
        def register(subparsers: Any) -> None:
            self.calls.append(self.origin)
            subparsers.add_parser(self.name)

        return register


def test_a_command_contributed_twice_is_registered_once_first_wins(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[str] = []
    found = [
        _FakeEntryPoint("zeta", "first", calls),
        _FakeEntryPoint("run", "first", calls),
        _FakeEntryPoint("run", "second", calls),  # later on sys.path: e.g. an editable install
    ]
    monkeypatch.setattr(fedprune.cli, "entry_points", lambda group: found)
    parser = build_parser()  # argparse would refuse a second "run" ("conflicting subparser")
    assert calls == ["first", "first"]  # run, then zeta: sorted by name
    assert parser.parse_args(["run"]).command == "run"


class _BrokenEntryPoint:
    name, value = "ghost", "server.gone:register"

    def load(self) -> Any:
        raise ModuleNotFoundError("No module named 'server.gone'")


def test_a_plugin_that_cannot_be_imported_is_skipped_with_a_warning(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    calls: list[str] = []
    found = [_BrokenEntryPoint(), _FakeEntryPoint("run", "first", calls)]
    monkeypatch.setattr(fedprune.cli, "entry_points", lambda group: found)
    with caplog.at_level("WARNING", logger="fedprune.cli"):
        parser = build_parser()
    assert calls == ["first"]
    assert parser.parse_args(["train"]).command == "train"  # the core commands still work
    assert "command 'ghost' unavailable: cannot import server.gone:register" in caplog.text
    with pytest.raises(SystemExit):
        parser.parse_args(["ghost"])


def _run(command: list[str], *, env: dict[str, str], cwd: Path, timeout: float) -> str:
    """Run ``command`` in its own session; whatever it leaves running (Ray daemons) is ended
    by its process group id afterwards. Returns stdout; fails the test on a non-zero exit."""
    proc = subprocess.Popen(
        command,
        env=env,
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        end_process_group(proc.pid)
        out, err = proc.communicate()
        pytest.fail(f"{command} timed out after {timeout} s\n{err[-4000:]}")
    finally:
        end_process_group(proc.pid)
    assert proc.returncode == 0, f"{command} exited with {proc.returncode}\n{err[-4000:]}"
    return out


@pytest.fixture
def ray_tmp() -> Iterator[Path]:
    """A short Ray temp dir of this test's own (Ray's socket paths must stay short)."""
    path = Path(tempfile.mkdtemp(prefix="fw", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.mark.slow
def test_wheel_installs_imports_and_runs_outside_the_checkout(
    tmp_path: Path, ray_tmp: Path
) -> None:
    dist, site, cwd, home = (tmp_path / d for d in ("dist", "site", "cwd", "home"))
    cwd.mkdir()
    build_env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(dist), str(ROOT)],
        check=True,
        env=build_env,
        cwd=cwd,
        timeout=600,
    )
    (wheel,) = dist.glob("fedprune-*.whl")
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(site), wheel],
        check=True,
        env=build_env,
        cwd=cwd,
        timeout=600,
    )
    env = {k: v for k, v in build_env.items() if k != "RAY_ADDRESS"}
    env |= {
        "PYTHONPATH": str(site),
        "FEDPRUNE_HOME": str(home),
        "RAY_TMPDIR": str(ray_tmp),
        "PYTHONUNBUFFERED": "1",
    }

    # Imported from the installed wheel, not from the checkout (nor the editable install).
    code = (
        "import json, fedprune, server, clients\n"
        "print(json.dumps([m.__file__ for m in (fedprune, server, clients)]))\n"
    )
    files = json.loads(_run([sys.executable, "-c", code], env=env, cwd=cwd, timeout=120))
    for file in files:
        assert Path(file).resolve().is_relative_to(site.resolve()), file
        assert not Path(file).resolve().is_relative_to(ROOT), file

    # `fedprune run` comes from the wheel's entry point.
    help_text = _run(
        [sys.executable, "-m", "fedprune.cli", "run", "--help"], env=env, cwd=cwd, timeout=120
    )
    for flag in ("--clients", "--rounds", "--secagg", "--ledger-dir", "--quiet", "--out"):
        assert flag in help_text

    # A tiny federated run in Ray simulation.
    out = tmp_path / "run"
    command = [
        *(sys.executable, "-m", "fedprune.cli", "run"),
        *("--clients", "2", "--rounds", "1", "--local-epochs", "1"),
        *("--public-warmup-epochs", "1", "--no-secagg", "--quiet", "--out", str(out)),
    ]
    _run(command, env=env, cwd=cwd, timeout=600)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["kind"] == "federated" and summary["secure_aggregation"] is False
    assert summary["rounds_completed"] == 1 and len(summary["rounds"]) == 1
    assert summary["rounds"][0]["clients_trained"] == 2
    assert 0 <= summary["test_accuracy"] <= 1
    assert 0 < summary["trained_coordinates"] < summary["total_coordinates"]
    config = summary["config"]
    assert config["federated.num-clients"] == 2 and config["federated.num-rounds"] == 1
    assert config["out-dir"] == str(out.resolve())
    assert sorted(summary["holders"]) == ["0", "1"]
    for holder in summary["holders"].values():
        assert holder["rounds_trained"] == 1 and holder["noise"] == "secure"
        assert 0 < holder["epsilon"] <= config["privacy.target-epsilon"]
        assert math.isfinite(holder["noise_multiplier"]) and holder["steps"] > 0
    assert summary["epsilon"] == max(h["epsilon"] for h in summary["holders"].values())
    # The simulated nodes kept their ledgers under the fresh FEDPRUNE_HOME, nowhere else.
    assert list((home / "ledgers").rglob("*.ledger"))
    assert not list(cwd.iterdir())
