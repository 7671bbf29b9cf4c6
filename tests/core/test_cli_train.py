"""``fedprune train``: runs end to end, writes the promised summary, follows the seed."""

import json
from pathlib import Path

import pytest

from fedprune import __version__
from fedprune.cli import main

REQUIRED = [
    "kind",
    "test_accuracy",
    "test_loss",
    "epsilon",
    "trained_coordinates",
    "total_coordinates",
    "public_only_test_accuracy",
    "holders",
    "config",
]
HOLDER_REQUIRED = [
    "num_examples",
    "epsilon",
    "delta",
    "noise_multiplier",
    "sample_rate",
    "steps",
    "accountant",
    "noise",
]
QUICK = ["--epochs", "1", "--public-warmup-epochs", "1", "--quiet"]


def _train(out: Path, *extra: str) -> dict:
    assert main(["train", "--dataset", "digits", "--out", str(out), *QUICK, *extra]) == 0
    return json.loads((out / "summary.json").read_text())


def test_train_writes_summary_with_every_setting(tmp_path: Path) -> None:
    summary = _train(tmp_path / "a", "--epsilon", "2", "--density", "0.05", "--strategy", "random")
    for key in REQUIRED:
        assert key in summary, key
    assert summary["kind"] == "centralised" and list(summary["holders"]) == ["0"]
    holder = summary["holders"]["0"]
    for key in HOLDER_REQUIRED:
        assert key in holder, key
    assert summary["epsilon"] == holder["epsilon"] <= 2.0
    assert holder["delta"] == 1e-5 and holder["accountant"] == "rdp"
    assert holder["noise"] == "secure"  # the default: not reproducible from the seed
    assert holder["num_examples"] > 0 and holder["steps"] > 0
    assert summary["trained_coordinates"] == round(0.05 * summary["total_coordinates"])
    config = summary["config"]
    assert config["mask.strategy"] == "random" and config["privacy.target-epsilon"] == 2.0
    assert config["optim.epochs"] == 1 and config["seed"] == 0


def _outcome(summary: dict) -> list:
    holder = summary["holders"]["0"]
    return [
        summary["test_accuracy"],
        summary["test_loss"],
        holder["noise_multiplier"],
        holder["steps"],
    ]


def test_same_seed_same_result_with_reproducible_noise_other_seed_differs(tmp_path: Path) -> None:
    first = _train(tmp_path / "a", "--seed", "3", "--reproducible-noise")
    again = _train(tmp_path / "b", "--seed", "3", "--reproducible-noise")
    other = _train(tmp_path / "c", "--seed", "4", "--reproducible-noise")
    assert first["holders"]["0"]["noise"] == "reproducible"
    assert _outcome(first) == _outcome(again)
    assert first["test_loss"] != other["test_loss"]


def test_same_seed_differs_without_reproducible_noise(tmp_path: Path) -> None:
    """Secure noise (the default) is not derived from the seed: equal configs, other noise."""
    first = _train(tmp_path / "a", "--seed", "3")
    again = _train(tmp_path / "b", "--seed", "3")
    assert first["holders"]["0"]["noise"] == again["holders"]["0"]["noise"] == "secure"
    assert first["config"]["seed"] == again["config"]["seed"] == 3
    assert first["public_only_test_accuracy"] == again["public_only_test_accuracy"]  # seeded
    assert first["holders"]["0"]["noise_multiplier"] == again["holders"]["0"]["noise_multiplier"]
    assert first["test_loss"] != again["test_loss"]


def test_ledger_dir_composes_spending_across_runs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ledgers = str(tmp_path / "ledgers")
    first = _train(tmp_path / "a", "--epsilon", "2", "--ledger-dir", ledgers)
    printed = capsys.readouterr().out
    assert "public-only (warm start) test accuracy" in printed and "epsilon" in printed
    second = _train(tmp_path / "b", "--epsilon", "2", "--ledger-dir", ledgers)
    assert first["epsilon"] <= 2.0 < second["epsilon"]
    assert second["holders"]["0"]["steps"] == 2 * first["holders"]["0"]["steps"]
    # The persisted spend counts against a budget: a third run would pass this one.
    budget = f"{second['epsilon'] * 1.01:.6f}"
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--out", str(tmp_path / "c"), *QUICK, "--epsilon", "2",
              "--ledger-dir", ledgers, "--max-epsilon", budget])  # fmt: skip
    assert exit_info.value.code == 2
    assert "refusing to train" in capsys.readouterr().err
    assert not (tmp_path / "c" / "summary.json").exists()


def test_non_private_run_claims_no_epsilon(tmp_path: Path) -> None:
    summary = _train(tmp_path / "np", "--non-private")
    assert summary["private"] is False and summary["epsilon"] is None
    holder = summary["holders"]["0"]
    assert holder["epsilon"] is None and holder["noise"] == "none"


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
        (["--dataset", "imagenet"], ("config data.dataset: expected one of", "got 'imagenet'")),
        (["--dataset", "mnist", "--data-dir", "nowhere"], "pass --download"),
        (["--strategy", "largest"], "largest"),
    ],
)
def test_bad_input_exits_2_with_a_clear_message(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    args: list[str],
    message: str | tuple[str, ...],
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--out", str(tmp_path / "x"), *QUICK, *args])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    for part in (message,) if isinstance(message, str) else message:
        assert part in err, (part, err)
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


def test_private_records_trains_on_a_fixed_subset_that_an_audit_rebuilds(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from fedprune.audit import load_target

    out = tmp_path / "cut"
    summary = _train(out, "--private-records", "300", "--epsilon", "2")
    assert summary["holders"]["0"]["num_examples"] == 300
    assert summary["config"]["data.private-records"] == 300
    # The audit's members are exactly those 300 records (rebuilt from the recorded config).
    assert len(load_target(out).split.private) == 300
    # More than the private set holds: one line naming the key, exit 2.
    with pytest.raises(SystemExit) as exc:
        main(
            [
                "train",
                "--dataset",
                "digits",
                "--out",
                str(tmp_path / "bad"),
                *QUICK,
                "--private-records",
                "5000",
            ]
        )
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "data.private-records" in err and "got 5000" in err and "Traceback" not in err
