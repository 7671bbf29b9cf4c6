"""The study driver end to end on a tiny configuration, its outputs and its CLI hook."""

import argparse
import csv
import json
from pathlib import Path

import pytest

from fedprune.activation.cli import add_activation_privacy_parser
from fedprune.activation.study import (
    ActivationPrivacyConfig,
    ActivationPrivacyResult,
    run_activation_privacy,
    save_activation_privacy,
)
from fedprune.cli import main
from fedprune.masks.topk import keep_count

TINY = ActivationPrivacyConfig(
    keep_fractions=(0.05,),
    epochs=3,
    inverter_epochs=3,
    inverter_hidden=64,
    noise_repeats=1,
    grid_examples=4,
)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fedprune")
    add_activation_privacy_parser(parser.add_subparsers(dest="command", required=True))
    return parser


@pytest.fixture(scope="module")
def tiny_run(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[ActivationPrivacyResult, dict[str, Path]]:
    result = run_activation_privacy(TINY)
    return result, save_activation_privacy(result, tmp_path_factory.mktemp("study"))


def test_study_rows_and_reports(
    tiny_run: tuple[ActivationPrivacyResult, dict[str, Path]],
) -> None:
    result, _ = tiny_run
    assert result.layer == "1"
    assert [s.protection for s in result.settings] == ["none", "pruning", "laplace", "gaussian"]
    none, pruning, laplace, gaussian = result.settings
    assert none.test_accuracy == result.base_accuracy and none.epsilon_whole_input is None
    assert none.unadapted_ssim == none.recon_ssim  # the unadapted decoder is this one
    assert pruning.test_accuracy == result.pruning[0].test_accuracy
    for noise in (laplace, gaussian):
        assert noise.test_accuracy <= pruning.test_accuracy  # calibrated to at most pruning's
        assert noise.scale > 0 and noise.epsilon_whole_input is not None
    assert result.pruning[0].perturbation.num_kept == keep_count(64 * 128, 0.05)
    assert len(result.grid_rows) == 4 and result.grid_originals.shape == (4, 1, 8, 8)
    assert result.grid_rows[0][1].shape == (4, 1, 8, 8)


def test_study_writes_outputs_with_assumptions_and_caveats(
    tiny_run: tuple[ActivationPrivacyResult, dict[str, Path]],
) -> None:
    _, paths = tiny_run
    for key in ("results", "csv", "config", "tradeoff", "reconstructions", "perturbation"):
        assert paths[key].exists() and paths[key].stat().st_size > 0
    results = json.loads(paths["results"].read_text())
    assert "NOT record-level DP" in results["scope"]
    caveats = " ".join(results["caveats"])
    assert "not a differential-privacy guarantee" in caveats
    assert "deterministic" in caveats
    assumptions = " ".join(results["assumptions"])
    assert "[0.0, 1.0]" in assumptions and "delta = 1e-05" in assumptions
    assert results["sensitivity"]["l1_whole_input"] > results["sensitivity"]["l1_one_coordinate"]
    eq = results["pruning"][0]["equivalent_gaussian"]
    assert eq["classical_valid"] is False and "not a DP guarantee" in eq["note"]
    with paths["csv"].open() as f:
        rows = list(csv.DictReader(f))
    assert [r["protection"] for r in rows] == ["none", "pruning", "laplace", "gaussian"]
    config = json.loads(paths["config"].read_text())
    assert config["keep_fractions"] == [0.05] and config["layer"] is None


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"keep_fractions": (1.5,)}, r"expected keep fractions in \(0, 1\), got 1.5"),
        ({"keep_fractions": ()}, "at least one keep fraction"),
        ({"public_fraction": 1.0}, r"expected public_fraction in \(0, 1\), got 1.0"),
        ({"inverter_epochs": 0}, "expected inverter_epochs >= 1, got 0"),
        ({"delta": 0.0}, r"expected delta in \(0, 1\), got 0.0"),
    ],
)
def test_config_validation(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ActivationPrivacyConfig(**kwargs)  # type: ignore[arg-type]


def test_unknown_layer_fails_fast_with_valid_names() -> None:
    with pytest.raises(ValueError, match=r"unknown layer '2'; expected one of \['1', '3', '5'\]"):
        run_activation_privacy(ActivationPrivacyConfig(layer="2"))


def test_cli_parser_defaults_and_func() -> None:
    args = _parser().parse_args(["activation-privacy", "--keep", "0.2", "0.1", "--layer", "3"])
    assert args.layer == "3" and not hasattr(args, "dataset")  # left out: the config default
    assert args.keep_fractions == [0.2, 0.1]
    assert args.out == "runs/activation-privacy" and args.quiet is False
    assert callable(args.func)
    args = _parser().parse_args(["activation-privacy", "--out", "elsewhere", "--quiet"])
    assert args.out == "elsewhere" and args.quiet is True
    with pytest.raises(SystemExit):
        _parser().parse_args(["activation-privacy", "--no-progress"])  # replaced by --quiet


def test_cli_reports_bad_layer_with_exit_code_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["activation-privacy", "--layer", "nope", "--out", str(tmp_path / "out")])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.splitlines()[-1].startswith("fedprune: error: ") and "Traceback" not in err
    assert "unknown layer 'nope'" in err and "['1', '3', '5']" in err
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_cli_runs_tiny_study(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    args = _parser().parse_args(
        [
            "activation-privacy",
            "--keep",
            "0.1",
            "--epochs",
            "2",
            "--inverter-epochs",
            "2",
            "--noise-repeats",
            "1",
            "--out",
            str(out),
            "--quiet",
        ]
    )
    assert args.func(args) == 0
    assert (out / "results.json").exists() and (out / "reconstructions.png").exists()
    printed = capsys.readouterr().out
    assert "not DP guarantees" in printed and "pruning" in printed


def test_cli_shares_train_flags_and_shows_defaults(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["activation-privacy", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "[dataset = digits]" in text and "[keep_fractions = 0.3 0.1 0.05 0.02 0.01]" in text
    assert "--public-fraction" in text and "--quiet" in text
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "[optim.lr = 0.5]" in text and "[mask.strategy = magnitude]" in text
