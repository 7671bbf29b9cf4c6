"""Cells of a comparison: one run each (setting x grid point x seed), and who runs them.

A cell's identity is its runner, its tuning and :func:`fedprune.fingerprint.config_fingerprint`
of its resolved config: the same "same run?" check as a federated checkpoint's resume.

Runners are registered by name in :data:`CELL_RUNNERS`. The core registers ``centralised``;
the Flower app registers ``federated`` (``server.compare_cell``, loaded with the app's
``fedprune`` commands), so this package never imports ``server/`` or Flower.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fedprune.compare.preset import SETTINGS, Preset
from fedprune.config import RunConfig
from fedprune.fingerprint import config_fingerprint
from fedprune.privacy.ledger_store import LedgerStore
from fedprune.registry import Registry
from fedprune.summary import RunSummary
from fedprune.training.centralised import run_centralised

__all__ = ["CELL_RUNNERS", "Cell", "CellRunner", "expand_cells", "run_centralised_cell"]

logger = logging.getLogger(__name__)

CellRunner = Callable[[RunConfig], RunSummary]
"""Runs one cell's resolved config (``out-dir`` = the cell's directory, which the runner owns:
it keeps a fresh ledger there) and returns its summary; raises on failure."""

CELL_RUNNERS: Registry[CellRunner] = Registry("cell runner")

LEDGER_DIR = "ledger"


@dataclass(frozen=True)
class Cell:
    """One run of a comparison.

    Attributes
    ----------
    axes:
        The grid values of this cell by axis name (``setting``, ``tuning``, aliases, keys) and
        ``seed``.
    setting, tuning:
        Setting name (:data:`~fedprune.compare.preset.SETTINGS`) and tuning protocol.
    config:
        The fully resolved config, ``out-dir`` the cell's directory.
    key:
        ``<setting>-<tuning>-<fingerprint>``: the cell's identity and directory name.
    """

    axes: dict[str, Any]
    setting: str
    tuning: str
    config: RunConfig
    key: str

    @property
    def runner(self) -> str:
        """The :data:`CELL_RUNNERS` name of this cell."""
        return SETTINGS[self.setting][0]

    @property
    def out_dir(self) -> Path:
        return Path(self.config.out_dir)


def cell_key(setting: str, tuning: str, tuning_key: dict[str, Any], flat: dict[str, Any]) -> str:
    """The identity of a cell from its parts (also recomputed from a stored row on resume)."""
    digest = config_fingerprint(flat, ignore={"out-dir"})
    if tuning_key:
        text = json.dumps(tuning_key, sort_keys=True, default=str)
        digest = f"{digest}{hashlib.sha256(text.encode()).hexdigest()[:4]}"
    return f"{setting}-{tuning}-{digest}"


def expand_cells(preset: Preset, out: Path) -> list[Cell]:
    """Every distinct cell of ``preset`` under ``out/cells/``, in grid order then seed.

    Dense cells are normalised: strategy ``none`` trains every coordinate, so its density is
    set to 1 and its mode to ``freeze`` (one dense cell per point, not one per density); a
    non-``none`` strategy at density 1 is the dense cell again and is dropped. Cells that
    resolve to the same identity are kept once.
    """
    cells: dict[str, Cell] = {}
    for point in preset.points():
        setting = point.get("setting", "centralised")
        tuning = point.get("tuning", "none")
        if tuning == "private" and SETTINGS[setting][0] != "centralised":
            logger.warning("private tuning is for centralised cells only: skipping %s", point)
            continue
        overrides = {
            **preset.base,
            **SETTINGS[setting][1],
            **preset.settings.get(setting, {}),
            **{preset.config_key(a): v for a, v in point.items() if a not in {"setting", "tuning"}},
        }
        if overrides.get("mask.strategy", RunConfig().mask.strategy) == "none":
            overrides.update({"mask.density": 1.0, "mask.mode": "freeze"})
        elif RunConfig().replace(**overrides).mask.density >= 1.0:
            continue
        for seed in preset.seeds:
            config = RunConfig().replace(**{**overrides, "seed": seed})
            key = cell_key(setting, tuning, preset.tuning.key(tuning), config.to_flat())
            if key in cells:
                continue
            config = config.replace(**{"out-dir": str((out / "cells" / key).resolve())})
            axes = {**point, "setting": setting, "tuning": tuning, "seed": seed}
            cells[key] = Cell(axes=axes, setting=setting, tuning=tuning, config=config, key=key)
    return list(cells.values())


def run_centralised_cell(config: RunConfig) -> RunSummary:
    """A centralised cell with a fresh ledger of its own (``<out-dir>/ledger``), so cells
    never compose with each other or with other runs: each reports its own epsilon."""
    ledger_dir = Path(config.out_dir) / LEDGER_DIR
    shutil.rmtree(ledger_dir, ignore_errors=True)
    return run_centralised(config, ledger_store=LedgerStore(ledger_dir), progress=False)


CELL_RUNNERS.register("centralised", run_centralised_cell)
