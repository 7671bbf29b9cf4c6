"""The one default table: ``RunConfig()``, ``[tool.flwr.app.config]`` and the ``run`` command."""

from __future__ import annotations

import argparse
import tomllib
from pathlib import Path

import pytest
from flwr.common.config import get_fused_config_from_dir, parse_config_args

from fedprune.cli import build_parser, main
from fedprune.config import RunConfig

APP_DIR = Path(__file__).resolve().parents[2]


def _pyproject_table() -> dict[str, object]:
    with (APP_DIR / "pyproject.toml").open("rb") as f:
        return dict(tomllib.load(f)["tool"]["flwr"]["app"]["config"])


def test_pyproject_table_equals_the_one_default_table() -> None:
    table, defaults = _pyproject_table(), RunConfig().to_flat()
    assert set(table) == set(defaults), sorted(set(table) ^ set(defaults))
    for key, value in defaults.items():
        assert table[key] == value, key
        assert type(table[key]) is type(value), key


def test_default_table_is_a_private_run_behind_secagg() -> None:
    config = RunConfig()
    assert config.privacy.enabled and config.secagg.enabled
    assert config.privacy.accountant in {"rdp", "prv"}


def test_flwr_run_config_with_overrides_parses() -> None:
    """``flwr run . --run-config '...'`` fuses overrides into the table with Flower's own code;
    the ServerApp and the ClientApp parse the result from ``context.run_config``."""
    overrides = parse_config_args(["mask.density=0.05 federated.num-rounds=3 secagg.enabled=false"])
    run_config = get_fused_config_from_dir(APP_DIR, overrides)

    config = RunConfig.from_flat(dict(run_config))

    assert config == RunConfig().replace(**overrides)


def test_names_are_validated_at_parse_time() -> None:
    for key, value in (("model", "vgg"), ("data.dataset", "imagenet"), ("mask.strategy", "lth")):
        with pytest.raises(ValueError, match=rf"config {key}: expected one of \["):
            RunConfig.from_flat({key: value})


def _subparser(name: str) -> argparse.ArgumentParser:
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices[name]


@pytest.mark.parametrize("command", ["train", "run"])
def test_every_flag_sets_a_known_config_key(command: str) -> None:
    known = set(RunConfig().to_flat())
    dests = {a.dest for a in _subparser(command)._actions if "." in a.dest or a.dest == "seed"}
    assert dests <= known, sorted(dests - known)
    assert "mask.density" in dests


def test_run_help_lists_the_flags_and_node_policy(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["run", "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for flag in (
        "--rounds",
        "--clients",
        "--local-epochs",
        "--density",
        "--epsilon",
        "--max-epsilon",
        "--secagg",
        "--no-secagg",
        "--out",
        "--quiet",
        "--ledger-dir",
        "--node-max-epsilon",
        "--reproducible-noise",
    ):
        assert flag in out, flag
    text = " ".join(out.split())
    assert f"[federated.num-rounds = {RunConfig().federated.num_rounds}]" in text  # the default


def test_run_rejects_an_invalid_density_before_starting_anything(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["run", "--density", "2", "--quiet"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "mask.density" in err and "(0, 1]" in err and "got 2.0" in err
    assert "Traceback" not in err


def test_run_rejects_an_unknown_strategy_before_starting_anything(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["run", "--strategy", "lottery", "--quiet"])
    assert exit_info.value.code == 2
    assert "mask.strategy" in capsys.readouterr().err
