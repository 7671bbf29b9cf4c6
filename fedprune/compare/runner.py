"""Run (or resume) every cell of a preset: skip done cells, record failures, keep going."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from fedprune.compare.cells import CELL_RUNNERS, Cell, expand_cells
from fedprune.compare.preset import Preset
from fedprune.compare.store import ResultStore, cell_row, failed_row
from fedprune.compare.tuning import tune_on_private, tune_on_public
from fedprune.io import write_json

__all__ = ["run_cell", "run_compare"]

logger = logging.getLogger(__name__)

TUNING_FILE = "tuning.json"


def run_cell(cell: Cell, preset: Preset) -> dict[str, Any]:
    """Run one cell (tuning first, if any) and return its row; raises on failure.

    Tuning records go to ``<cell dir>/tuning.json``.
    """
    started = time.perf_counter()
    runner = CELL_RUNNERS.get(cell.runner)
    if cell.tuning == "none":
        summary = runner(cell.config)
        return cell_row(cell, summary, wall_s=time.perf_counter() - started)
    if cell.tuning == "public":
        chosen, records = tune_on_public(
            cell.config, preset.tuning, federated=cell.runner == "federated"
        )
        write_json(cell.out_dir / TUNING_FILE, {"protocol": "public", "candidates": records})
        summary = runner(cell.config.replace(**chosen))
        return cell_row(
            cell,
            summary,
            wall_s=time.perf_counter() - started,
            tuned=chosen,
            tuning_trials=len(records),
        )
    if cell.runner != "centralised":
        raise ValueError(f"private tuning is implemented for centralised cells, not {cell.setting}")
    result = tune_on_private(cell.config, preset.tuning)
    write_json(
        cell.out_dir / TUNING_FILE,
        {
            "protocol": "private",
            "total_epsilon": result.total_epsilon,
            "noise_multiplier": result.noise_multiplier,
            "trials": result.trials,
        },
    )
    result.summary.write(cell.out_dir)
    return cell_row(
        cell,
        result.summary,
        wall_s=time.perf_counter() - started,
        tuned=result.chosen,
        total_epsilon=result.total_epsilon,
        tuning_trials=len(result.trials),
    )


def run_compare(preset: Preset, out: Path, *, progress: bool = True) -> list[dict[str, Any]]:
    """Run every cell of ``preset`` into ``out``; return the current grid's rows, in order.

    A cell whose successful row is already in ``out/results.json`` is skipped. Every finished
    cell (success or failure) rewrites ``results.json`` and ``results.csv`` atomically, so an
    interruption loses at most the cell in flight. A failing cell is recorded with its error
    (and tried again by the next invocation); the others still run. Ctrl-C stops at once.
    """
    out.mkdir(parents=True, exist_ok=True)
    cells = expand_cells(preset, out)
    store = ResultStore(out, preset)
    todo = [c for c in cells if store.done(c) is None]
    logger.info(
        "%d cells, %d done before, %d to run", len(cells), len(cells) - len(todo), len(todo)
    )
    bar = tqdm(total=len(todo), desc="compare", unit="cell", disable=not progress)
    with bar, logging_redirect_tqdm():
        for cell in todo:
            bar.set_postfix_str(
                f"{cell.setting} {cell.config.mask.strategy} seed {cell.config.seed}"
            )
            started = time.perf_counter()
            try:
                row = run_cell(cell, preset)
            except Exception as err:  # a failing cell is recorded, the rest go on
                logger.error("cell %s failed: %s: %s", cell.key, type(err).__name__, err)
                row = failed_row(cell, err, wall_s=time.perf_counter() - started)
            store.add(row)
            bar.update()
    return [store.rows[c.key] for c in cells if c.key in store.rows]
