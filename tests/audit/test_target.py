"""Reading run directories: the saved model is the run's final model; bad input is named."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from fedprune.audit import load_target
from fedprune.cli import main
from fedprune.federated import Checkpoint, save_checkpoint
from fedprune.summary import RunSummary
from fedprune.training.centralised import MODEL_FILE
from fedprune.training.loops import evaluate

# Generous: the runs take about a minute alone, far longer on a shared, loaded machine.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(3600)]


def test_centralised_model_file_reproduces_the_reported_test_accuracy(dp_run: Path) -> None:
    target = load_target(dp_run)
    summary = RunSummary.read(dp_run)
    assert (dp_run / MODEL_FILE).exists()
    assert evaluate(target.model, target.split.test).accuracy == summary.test_accuracy
    assert len(target.split.private) == summary.holders["0"].num_examples


def test_a_federated_checkpoint_is_read_when_there_is_no_model_file(
    dp_run: Path, tmp_path: Path
) -> None:
    central = load_target(dp_run)
    summary = RunSummary.read(dp_run)
    summary.kind = "federated"
    fed = tmp_path / "fed"
    save_checkpoint(
        fed, Checkpoint(round=3, model=central.model.state_dict(), mask=None, summary=summary)
    )
    target = load_target(fed)
    assert target.summary.kind == "federated"
    assert evaluate(target.model, target.split.test).accuracy == summary.test_accuracy


def test_bad_run_directories_fail_with_one_line_naming_the_problem(
    dp_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    no_model = tmp_path / "no-model"
    no_model.mkdir()
    shutil.copy(dp_run / "summary.json", no_model / "summary.json")
    corrupt = tmp_path / "corrupt"
    shutil.copytree(dp_run, corrupt)
    (corrupt / MODEL_FILE).write_bytes(b"not a model")
    cases = [
        ([str(tmp_path / "missing")], "does not exist"),
        ([str(tmp_path)], "no summary.json"),
        ([str(no_model)], "no saved model"),
        ([str(corrupt)], "corrupt model file"),
        ([str(dp_run), "--references", "3"], "even --references"),
    ]
    for argv, message in cases:
        with pytest.raises(SystemExit) as exit_info:
            main(["audit", *argv, "--quiet", "--canaries", "0"])
        assert exit_info.value.code == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, err
