"""Noise calibrations remembered on disk: reused only when confirmed, never weakening privacy."""

from __future__ import annotations

from typing import Any

import pytest

from fedprune.io import read_json, write_json
from fedprune.privacy import accounting, calibration_cache
from fedprune.privacy.accounting import calibrate_noise, epsilon_of

ARGS: dict[str, Any] = {
    "target_epsilon": 2.0,
    "delta": 1e-5,
    "sample_rate": 0.05,
    "steps": 100,
    "accountant": "rdp",
}


def _no_search(**kwargs: Any) -> float:
    raise AssertionError("searched although a confirmed calibration was on disk")


def test_a_remembered_calibration_is_reused_without_a_search(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sigma = calibrate_noise(**ARGS)
    assert list(read_json(calibration_cache.cache_path()).values()) == [sigma]
    monkeypatch.setattr(accounting, "get_noise_multiplier", _no_search)
    assert calibrate_noise(**ARGS) == sigma  # as a fresh process would: from the file
    with pytest.raises(AssertionError, match="searched"):
        calibrate_noise(**{**ARGS, "steps": 101})  # other inputs: not remembered


@pytest.mark.parametrize("factor", [0.5, 2.0])
def test_an_edited_calibration_is_not_trusted(factor: float) -> None:
    sigma = calibrate_noise(**ARGS)
    path = calibration_cache.cache_path()
    (key,) = read_json(path)
    write_json(path, {key: sigma * factor})  # less noise (weaker) or more (needlessly strong)
    assert calibrate_noise(**ARGS) == sigma
    assert read_json(path) == {key: sigma}
    spent = epsilon_of([(sigma, 0.05, 100)], delta=1e-5, accountant="rdp")
    assert 2.0 - 0.01 <= spent <= 2.0


def test_a_broken_cache_file_only_costs_a_search() -> None:
    path = calibration_cache.cache_path()
    path.parent.mkdir(parents=True)
    path.write_text("{not json")
    sigma = calibrate_noise(**ARGS)
    assert list(read_json(path).values()) == [sigma]
    path.unlink()
    path.mkdir()  # cannot be written: calibration still works
    assert calibrate_noise(**ARGS) == sigma
