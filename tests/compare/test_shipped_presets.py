"""Every preset shipped under ``experiments/presets/`` parses and expands into valid cells."""

from __future__ import annotations

from pathlib import Path

import pytest

from fedprune.compare.cells import expand_cells
from fedprune.compare.preset import load_preset

PRESETS = sorted((Path(__file__).parents[2] / "experiments" / "presets").glob("*.toml"))


def test_the_documented_presets_ship() -> None:
    assert {p.stem for p in PRESETS} >= {"digits-quick", "fashion-mnist", "mnist", "cifar10"}


@pytest.mark.parametrize("path", PRESETS, ids=lambda p: p.stem)
def test_preset_expands_into_distinct_valid_cells(path: Path, tmp_path: Path) -> None:
    cells = expand_cells(load_preset(path), tmp_path)
    assert cells and len({c.key for c in cells}) == len(cells)
    for cell in cells:  # dense cells are normalised to density 1, masked ones keep theirs
        dense = cell.config.mask.strategy == "none"
        assert (cell.config.mask.density == 1.0) == dense


def test_fashion_mnist_preset_is_the_scatternet_benchmark(tmp_path: Path) -> None:
    cells = expand_cells(
        load_preset(PRESETS[[p.stem for p in PRESETS].index("fashion-mnist")]), tmp_path
    )
    assert {c.config.data.features for c in cells} == {"scattering"}
    assert {c.config.model for c in cells} == {"linear"}
    by_setting = {c.setting: c.config for c in cells}
    assert by_setting["centralised"].optim.batch_size == 8192
    assert by_setting["federated-iid"].federated.num_clients == 10
    # 3 seeds x 3 epsilons x (dense + 2 strategies x 2 densities) x 2 settings
    assert len(cells) == 3 * 3 * 5 * 2
