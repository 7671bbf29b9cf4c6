"""``[tool.flwr.app.config]`` (what ``flwr run .`` passes) and the ``fedprune run`` command line."""

from __future__ import annotations

import argparse
import math

import pytest
from flwr.common.config import get_fused_config_from_dir, parse_config_args

from fedprune.cli import build_parser, main
from fedprune.config import RunConfig
from server.simulation import APP_DIR, app_defaults


def test_pyproject_app_config_parses_into_a_valid_run_config() -> None:
    table = app_defaults()
    known = RunConfig().to_flat()
    assert set(table) <= set(known), sorted(set(table) - set(known))

    config = RunConfig.from_flat(table)  # validates every value

    flat = config.to_flat()
    for key, value in table.items():
        assert flat[key] == value, key
        assert type(flat[key]) is type(value), key
    # the federated defaults are a DP run behind SecAgg+ with a finite hard budget
    assert config.privacy.enabled and config.secagg.enabled
    assert math.isfinite(config.privacy.max_epsilon)
    assert config.privacy.max_epsilon >= config.privacy.target_epsilon


def test_flwr_run_config_with_overrides_parses() -> None:
    """``flwr run . --run-config '...'`` fuses overrides into the table with Flower's own code;
    the ServerApp parses the result from ``context.run_config``."""
    overrides = parse_config_args(["mask.density=0.05 federated.num-rounds=3 secagg.enabled=false"])
    run_config = get_fused_config_from_dir(APP_DIR, overrides)

    config = RunConfig.from_flat(dict(run_config))

    assert config.mask.density == 0.05
    assert config.federated.num_rounds == 3
    assert config.secagg.enabled is False
    assert config == RunConfig.from_flat(app_defaults()).replace(**overrides)


def test_flwr_run_can_override_every_federated_setting() -> None:
    centralised_only = {"optim.epochs"}
    missing = set(RunConfig().to_flat()) - set(app_defaults()) - centralised_only
    assert not missing, sorted(missing)


def _run_parser() -> argparse.ArgumentParser:
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices["run"]


def test_every_run_flag_sets_a_known_config_key() -> None:
    known = set(RunConfig().to_flat())
    dests = {a.dest for a in _run_parser()._actions if "." in a.dest or a.dest == "seed"}
    assert dests <= known, sorted(dests - known)
    assert {"federated.num-rounds", "federated.num-clients", "mask.density"} <= dests


def test_run_help_lists_the_flags(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["run", "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for flag in (
        "--rounds",
        "--clients",
        "--local-epochs",
        "--server-lr",
        "--density",
        "--mode",
        "--select-every",
        "--epsilon",
        "--max-epsilon",
        "--secagg",
        "--no-secagg",
        "--non-private",
        "--out",
    ):
        assert flag in out, flag
    assert "[federated.num-rounds]" in out
    assert "[tool.flwr.app.config]" in out


def test_run_rejects_an_invalid_density_before_starting_anything(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["run", "--density", "2", "--quiet"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "mask.density" in err
    assert "(0, 1]" in err
    assert "got 2.0" in err
    assert "Traceback" not in err


def test_run_rejects_an_invalid_choice(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["run", "--mode", "sometimes"])
    assert exit_info.value.code == 2
    assert "--mode" in capsys.readouterr().err
