"""``fedprune compare``: one resumable runner for grids of centralised and federated runs.

:mod:`~fedprune.compare.preset` parses a TOML preset, :mod:`~fedprune.compare.cells` expands it
into cells and holds the cell-runner registry (the Flower app adds ``federated``),
:mod:`~fedprune.compare.tuning` chooses hyperparameters honestly, :mod:`~fedprune.compare.runner`
runs and resumes, :mod:`~fedprune.compare.store` keeps the rows and
:mod:`~fedprune.compare.report` writes the report and plots.
"""

from fedprune.compare.cells import CELL_RUNNERS, Cell, CellRunner, expand_cells
from fedprune.compare.preset import Preset, TuningSpec, apply_sets, load_preset
from fedprune.compare.report import write_report
from fedprune.compare.runner import run_cell, run_compare

__all__ = [
    "CELL_RUNNERS",
    "Cell",
    "CellRunner",
    "Preset",
    "TuningSpec",
    "apply_sets",
    "expand_cells",
    "load_preset",
    "run_cell",
    "run_compare",
    "write_report",
]
