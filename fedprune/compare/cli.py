"""``fedprune compare PRESET.toml [--set KEY=VALUE ...] [--out DIR] [--quiet]``."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import Any

from fedprune.compare.cells import CELL_RUNNERS, expand_cells
from fedprune.compare.preset import apply_sets, load_preset
from fedprune.compare.report import write_report
from fedprune.compare.runner import run_compare
from fedprune.flags import add_output_flags
from fedprune.io import write_json

__all__ = ["add_compare_parser"]

DEFAULT_OUT = Path("runs/compare")


def _compare(args: argparse.Namespace) -> int:
    preset = apply_sets(load_preset(Path(args.preset)), args.set)
    out = Path(getattr(args, "out-dir", DEFAULT_OUT / preset.name))
    cells = expand_cells(preset, out)  # fails at start on bad values
    missing = sorted({c.runner for c in cells} - set(CELL_RUNNERS.names()))
    if missing:
        raise ValueError(
            f"cell runner(s) {missing} are not available: federated settings need the Flower app "
            "(server/), whose fedprune commands register them"
        )
    out.mkdir(parents=True, exist_ok=True)
    write_json(
        out / "compare.json",
        {"preset": str(args.preset), "set": args.set, "resolved": _jsonable(preset)},
    )
    rows = run_compare(preset, out, progress=not args.quiet)
    report = write_report(rows, out, title=f"fedprune compare: {preset.name}")
    failed = sum(r["status"] != "ok" for r in rows)
    print(f"{len(rows) - failed}/{len(rows)} cells done; report: {report}")
    return 0 if failed == 0 else 1


def _jsonable(preset: Any) -> Any:
    return dataclasses.asdict(preset)


def add_compare_parser(sub: Any) -> None:
    """Add ``compare`` to the ``fedprune`` subcommands."""
    parser = sub.add_parser(
        "compare",
        help="resumable grid comparison from a TOML preset (experiments/presets/)",
        description="Run every cell of a preset (setting x strategy x mode x density x epsilon "
        "x public set x tuning x seed), skipping cells already done in OUT; writes "
        "results.csv/json after every cell, then report.md and plots. Exit 1 if a cell failed.",
    )
    parser.add_argument("preset", metavar="PRESET.toml", help="the preset file")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override: a config key, grid.AXIS=v1,v2, seeds=0,1, tuning.KEY=v1,v2 (repeat)",
    )
    add_output_flags(parser)
    parser.set_defaults(func=_compare)
