"""``fedprune train``: runs end to end, writes the promised summary, follows the seed."""

import json
from pathlib import Path

import pytest

from fedprune import __version__
from fedprune.cli import main

REQUIRED = [
    "test_accuracy",
    "epsilon",
    "delta",
    "noise_multiplier",
    "sample_rate",
    "steps",
    "accountant",
    "trained_coordinates",
    "total_coordinates",
    "public_only_test_accuracy",
    "config",
]
QUICK = ["--epochs", "1", "--public-warmup-epochs", "1", "--quiet"]


def _train(out: Path, *extra: str) -> dict:
    assert main(["train", "--dataset", "digits", "--out", str(out), *QUICK, *extra]) == 0
    return json.loads((out / "summary.json").read_text())


def test_train_writes_summary_with_every_setting(tmp_path: Path) -> None:
    summary = _train(tmp_path / "a", "--epsilon", "2", "--density", "0.05", "--strategy", "random")
    for key in REQUIRED:
        assert key in summary, key
    assert summary["epsilon"] <= 2.0
    assert summary["delta"] == 1e-5 and summary["accountant"] == "rdp"
    assert summary["trained_coordinates"] == round(0.05 * summary["total_coordinates"])
    config = summary["config"]
    assert config["mask.strategy"] == "random" and config["privacy.target-epsilon"] == 2.0
    assert config["optim.epochs"] == 1 and config["seed"] == 0


def test_same_seed_same_result_other_seed_differs(tmp_path: Path) -> None:
    first = _train(tmp_path / "a", "--seed", "3")
    again = _train(tmp_path / "b", "--seed", "3")
    other = _train(tmp_path / "c", "--seed", "4")
    keys = ["test_accuracy", "test_loss", "noise_multiplier", "steps"]
    assert [first[k] for k in keys] == [again[k] for k in keys]
    assert first["test_loss"] != other["test_loss"]


def test_non_private_run_claims_no_epsilon(tmp_path: Path) -> None:
    summary = _train(tmp_path / "np", "--non-private")
    assert summary["private"] is False and summary["epsilon"] is None


def test_version_and_help(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert __version__ in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    out = capsys.readouterr().out
    for flag in ["--epsilon", "--mode", "--strategy", "--density", "--scope", "--out"]:
        assert flag in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--density", "0"], "mask.density"),
        (["--dataset", "imagenet"], "unknown dataset 'imagenet'"),
        (["--dataset", "mnist", "--data-dir", "nowhere"], "pass --download"),
        (["--strategy", "largest"], "largest"),
    ],
)
def test_bad_input_exits_2_with_a_clear_message(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--out", str(tmp_path / "x"), *QUICK, *args])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "x" / "summary.json").exists()


def test_budget_refusal_is_reported_not_a_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(
            ["train", "--out", str(tmp_path / "x"), *QUICK, "--epsilon", "4", "--max-epsilon", "1"]
        )
    assert exit_info.value.code == 2
    assert "refusing to train" in capsys.readouterr().err
