"""``fedprune run`` / ``train`` on bad input: one line naming the problem, exit 2, no traceback,
nothing earlier lost -- all before Ray starts; and a run that trained nothing exits non-zero."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

import server.simulation as simulation
from fedprune.cli import main
from fedprune.config import RunConfig
from fedprune.federated.checkpoint import CHECKPOINT_FILE
from fedprune.summary import SUMMARY_FILE, HolderSpend, RoundRecord, RunSummary

QUICK = ["--dataset", "digits", "--clients", "3", "--rounds", "1", "--quiet"]
PRIVATE_RECORDS = 1293
"""Records in the digits private split (seed 0)."""


@pytest.fixture
def earlier(tmp_path: Path) -> Path:
    """An out-dir holding an earlier run's files, which no failed command may touch."""
    out = tmp_path / "earlier"
    out.mkdir()
    (out / SUMMARY_FILE).write_text('{"earlier": true}\n')
    (out / CHECKPOINT_FILE).write_bytes(b"earlier checkpoint")
    return out


def _no_ray(monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(*args: object, **kwargs: object) -> RunSummary:
        raise AssertionError("the simulation started despite bad input")

    monkeypatch.setattr(simulation, "run_federated", fail)


def _fails_in_one_line(
    capsys: pytest.CaptureFixture[str], argv: list[str], *expected: str, code: int = 2
) -> str:
    try:
        returned = main(argv)
    except SystemExit as exit_info:  # argparse and user errors exit; a finished run returns
        returned = exit_info.code  # type: ignore[assignment]
    assert returned == code
    lines = capsys.readouterr().err.splitlines()
    # the error is the one last line; anything before it is the ordinary INFO log
    assert lines and lines[-1].startswith("fedprune: error: "), lines
    assert all(line.startswith("INFO ") for line in lines[:-1]), lines
    err = lines[-1]
    for part in expected:
        assert part in err, (part, err)
    return err


def _intact(out: Path) -> None:
    assert (out / SUMMARY_FILE).read_text() == '{"earlier": true}\n'
    assert (out / CHECKPOINT_FILE).read_bytes() == b"earlier checkpoint"
    assert sorted(p.name for p in out.iterdir()) == [CHECKPOINT_FILE, SUMMARY_FILE]


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        (["--clients", str(PRIVATE_RECORDS + 1)], f"federated.num-clients={PRIVATE_RECORDS + 1}"),
        (["--clients", "0"], "config federated.num-clients: expected >= 1"),
        (["--rounds", "0"], "config federated.num-rounds: expected >= 1, got 0"),
        (["--density", "1.5"], "config mask.density: expected a value in (0, 1]"),
        (["--delta", "1"], "config privacy.delta: expected a value in (0, 1)"),
        (["--strategy", "largest"], "largest"),
        (["--dataset", "imagenet"], "config data.dataset: expected one of"),
        (["--model", "resnet9000"], "config model: expected one of"),
    ],
)
def test_bad_config_fails_before_the_simulation(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    earlier: Path,
    flags: list[str],
    expected: str,
) -> None:
    _no_ray(monkeypatch)
    _fails_in_one_line(capsys, ["run", *QUICK, "--out", str(earlier), *flags], expected)
    _intact(earlier)


def test_more_clients_than_records_is_refused_by_name(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    _no_ray(monkeypatch)
    argv = ["run", *QUICK, "--out", str(tmp_path / "out"), "--clients", "5000"]
    _fails_in_one_line(capsys, argv, "federated.num-clients=5000", "[1, 1293] (number of records)")
    # and the largest possible count passes the check (it reaches the simulation)
    with pytest.raises(AssertionError, match="the simulation started"):
        main(["run", *QUICK, "--out", str(tmp_path / "out"), "--clients", str(PRIVATE_RECORDS)])


@pytest.mark.parametrize("which", ["--out", "--ledger-dir"])
def test_a_path_under_a_file_is_refused(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path, which: str
) -> None:
    _no_ray(monkeypatch)
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    paths = {"--out": str(tmp_path / "out"), "--ledger-dir": str(tmp_path / "ledgers")}
    paths[which] = str(blocker / "sub")
    what = "out-dir" if which == "--out" else "ledger-dir"
    argv = ["run", *QUICK, "--out", paths["--out"], "--ledger-dir", paths["--ledger-dir"]]
    _fails_in_one_line(capsys, argv, f"{what} '{blocker / 'sub'}' is not a writable directory")
    assert blocker.read_text() == "not a directory"


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only directories")
def test_a_read_only_out_dir_is_refused(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, earlier: Path
) -> None:
    _no_ray(monkeypatch)
    earlier.chmod(0o500)
    try:
        _fails_in_one_line(capsys, ["run", *QUICK, "--out", str(earlier)], "out-dir", "Permission")
    finally:
        earlier.chmod(0o700)
    _intact(earlier)


def test_train_refuses_a_bad_out_dir_before_training(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import fedprune.training.centralised as centralised

    def fail(*args: object, **kwargs: object) -> RunSummary:
        raise AssertionError("training started despite a bad out-dir")

    monkeypatch.setattr(centralised, "run_centralised", fail)
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    for flag, what in (("--out", "out-dir"), ("--ledger-dir", "ledger-dir")):
        argv = ["train", "--dataset", "digits", "--quiet", "--out", str(tmp_path / "out")]
        _fails_in_one_line(capsys, [*argv, flag, str(blocker / "sub")], f"{what} ")


def test_a_corrupt_checkpoint_is_refused_and_kept(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, earlier: Path
) -> None:
    _no_ray(monkeypatch)
    argv = ["run", *QUICK, "--out", str(earlier), "--resume"]
    _fails_in_one_line(capsys, argv, f"corrupt checkpoint in {earlier}")
    _intact(earlier)


# -- a run that trained nothing ---------------------------------------------------------------


def _finished(config: RunConfig, rounds: list[RoundRecord], **holders: HolderSpend) -> RunSummary:
    return RunSummary(
        kind="federated",
        config=config.to_flat(),
        public_only_test_accuracy=0.5,
        total_coordinates=10,
        rounds=rounds,
        holders=dict(holders),
    )


def test_a_run_where_every_client_refused_exits_non_zero_saying_why(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    reason = "refusing to train: ... above the budget max_epsilon=0.01"
    ran: list[dict[str, object]] = []

    def all_refused(overrides: dict[str, object], **kwargs: object) -> RunSummary:
        ran.append(overrides)
        rows = [RoundRecord(round=1, clients_refused=[0, 1], skipped="no client trained")]
        rows[0].failures = 1
        return _finished(
            RunConfig().replace(**overrides),
            rows,
            **{"0": HolderSpend(refused=reason), "1": HolderSpend(refused=reason)},
        )

    monkeypatch.setattr(simulation, "run_federated", all_refused)
    argv = ["run", *QUICK, "--out", str(tmp_path / "out")]
    err = _fails_in_one_line(
        capsys,
        argv,
        "no client trained in round 1",
        f"client 0 refused: {reason}",
        f"client 1 refused: {reason}",
        "1 failed or dropped replies",
        str(tmp_path / "out"),
        code=1,
    )
    assert len(ran) == 1
    assert "max_epsilon=0.01" in err


def test_a_run_where_one_client_trained_exits_zero(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    def one_trained(overrides: dict[str, object], **kwargs: object) -> RunSummary:
        rows = [
            RoundRecord(round=1, clients_trained=1, clients_refused=[1]),
            RoundRecord(round=2, clients_refused=[0, 1], skipped="no client trained"),
        ]
        return _finished(RunConfig().replace(**overrides), rows)

    monkeypatch.setattr(simulation, "run_federated", one_trained)
    assert main(["run", *QUICK, "--rounds", "2", "--out", str(tmp_path / "out")]) == 0


def test_idle_reason_names_every_cause_and_only_counts_this_runs_rounds() -> None:
    config = RunConfig()
    rows = [
        RoundRecord(round=1, clients_trained=3),
        RoundRecord(round=2, failures=2, skipped="no client trained"),
        RoundRecord(round=3, skipped="secure aggregation halted"),
    ]
    summary = _finished(config, rows, **{"4": HolderSpend(rounds_malformed=1)})
    assert summary.idle_reason() == ""  # round 1 trained
    assert summary.idle_reason(after_round=3) == ""  # no round ran after 3
    assert summary.idle_reason(after_round=1) == (
        "no client trained in rounds 2-3: malformed replies from clients ['4']; "
        "2 failed or dropped replies; secure aggregation halted"
    )


@pytest.mark.slow
def test_a_real_run_every_client_refuses_exits_1_naming_the_budget(tmp_path: Path) -> None:
    """The real thing (Ray): nodes whose budget is below one round's spend all refuse."""
    ray_tmp = Path(tempfile.mkdtemp(prefix="fpbi", dir="/tmp"))  # short: Unix socket paths
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"} | {"RAY_TMPDIR": str(ray_tmp)}
    argv = [*QUICK, "--no-secagg", "--public-warmup-epochs", "1", "--local-epochs", "1"]
    try:
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "fedprune.cli",
                "run",
                *argv,
                "--out",
                str(tmp_path / "out"),
                "--node-max-epsilon",
                "0.01",
            ],
            capture_output=True,
            text=True,
            env=env,
            timeout=900,
            cwd=tmp_path,
        )
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)
    assert proc.returncode == 1, proc.stderr[-3000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("fedprune: error: no client trained in round 1: client 0 refused: ")
    assert "max_epsilon=0.01" in last and "Traceback" not in proc.stderr
    summary = RunSummary.read(tmp_path / "out")  # the results are still written
    assert summary.rounds[0].clients_refused == [0, 1, 2]
