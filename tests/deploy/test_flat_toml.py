"""Flat TOML tables parse back (as Flower reads --node-config and --run-config files)."""

from __future__ import annotations

import math
import tomllib
from pathlib import Path

import pytest

from fedprune.config import RunConfig
from fedprune.deploy.flat_toml import dump_flat_toml, write_flat_toml


def test_values_round_trip_through_a_toml_parser(tmp_path: Path) -> None:
    values = {
        "partition-id": 2,
        "ledger-dir": '/tmp/a dir/with "quotes" \\ and ü',
        "reproducible-noise": False,
        "delta": 1e-05,
        "max-epsilon": math.inf,
        "data.dataset": "digits",
    }
    path = write_flat_toml(tmp_path / "node.toml", values)
    assert tomllib.loads(path.read_text()) == values


def test_the_default_run_config_round_trips() -> None:
    flat = RunConfig().to_flat()
    assert RunConfig.from_flat(tomllib.loads(dump_flat_toml(flat))) == RunConfig()


def test_a_non_scalar_is_refused() -> None:
    with pytest.raises(TypeError, match="partition-id"):
        dump_flat_toml({"partition-id": [1, 2]})  # type: ignore[dict-item]
