"""The results of one comparison directory: one row per cell, rewritten atomically after each.

``results.json`` holds every row with its full resolved ``config`` (what resume needs) and the
per-round curve; ``results.csv`` is the tidy view (one row per run, one column per setting or
metric, no nested values). A row is found again by :func:`~fedprune.compare.cells.cell_key`
recomputed from its stored config against today's defaults, so a changed default makes the
old row a different run (it stays in the file, and is not reported for the current grid).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from fedprune.compare.cells import Cell, cell_key
from fedprune.compare.preset import Preset
from fedprune.io import read_json, to_jsonable, write_csv, write_json
from fedprune.summary import RunSummary

__all__ = ["CSV_COLUMNS", "ResultStore", "cell_row", "failed_row"]

RESULTS_JSON = "results.json"
RESULTS_CSV = "results.csv"

CSV_COLUMNS = (
    "cell",
    "status",
    "setting",
    "tuning",
    "dataset",
    "model",
    "public_kind",
    "strategy",
    "mode",
    "density",
    "target_epsilon",
    "seed",
    "test_accuracy",
    "public_only_test_accuracy",
    "epsilon",
    "total_epsilon",
    "delta",
    "noise_multiplier",
    "trained_coordinates",
    "total_coordinates",
    "trained_density",
    "upload_bytes",
    "rounds_completed",
    "num_clients",
    "partition",
    "lr",
    "max_grad_norm",
    "batch_size",
    "tuned",
    "tuning_trials",
    "duration_s",
    "wall_s",
    "error",
)
"""The CSV's leading columns; grid axes that are other config keys follow them."""

UPLOAD_BYTES_PER_VALUE = 4
"""A client uploads the float32 values of its selected coordinates (the server sends the mask)."""


def _base_row(cell: Cell) -> dict[str, Any]:
    c = cell.config
    row: dict[str, Any] = {
        "cell": cell.key,
        "setting": cell.setting,
        "tuning": cell.tuning,
        "dataset": c.data.dataset,
        "model": c.model,
        "public_kind": c.data.public_kind,
        "strategy": c.mask.strategy,
        "mode": c.mask.mode,
        "density": c.mask.density,
        "target_epsilon": c.privacy.target_epsilon if c.privacy.enabled else None,
        "seed": c.seed,
        "delta": c.privacy.delta,
        "lr": c.optim.lr,
        "max_grad_norm": c.privacy.max_grad_norm,
        "batch_size": c.optim.batch_size,
    }
    if cell.runner == "federated":
        row.update(num_clients=c.federated.num_clients, partition=c.data.partition)
    flat = c.to_flat()
    for axis in cell.axes:
        key = Preset.config_key(axis)
        if key in flat and key not in _SHOWN_KEYS:
            row[key] = flat[key]
    return row


_SHOWN_KEYS = {
    "data.public-kind",
    "mask.strategy",
    "mask.mode",
    "mask.density",
    "privacy.target-epsilon",
    "seed",
}


def cell_row(
    cell: Cell,
    summary: RunSummary,
    *,
    wall_s: float,
    tuned: dict[str, Any] | None = None,
    total_epsilon: float | None = None,
    tuning_trials: int | None = None,
) -> dict[str, Any]:
    """The row of a finished cell (``total_epsilon`` defaults to the run's own epsilon)."""
    row = _base_row(cell)
    config = summary.config  # as run: with the tuned values
    upload = None
    if summary.kind == "federated":
        uploads = sum(r.clients_trained for r in summary.rounds)
        upload = uploads * summary.trained_coordinates * UPLOAD_BYTES_PER_VALUE
    sigmas = [h.noise_multiplier for h in summary.holders.values() if h.noise_multiplier]
    row.update(
        status="ok",
        lr=config.get("optim.lr", row["lr"]),
        max_grad_norm=config.get("privacy.max-grad-norm", row["max_grad_norm"]),
        test_accuracy=summary.test_accuracy,
        public_only_test_accuracy=summary.public_only_test_accuracy,
        epsilon=summary.epsilon,
        total_epsilon=summary.epsilon if total_epsilon is None else total_epsilon,
        noise_multiplier=max(sigmas) if sigmas else None,
        trained_coordinates=summary.trained_coordinates,
        total_coordinates=summary.total_coordinates,
        trained_density=summary.trained_coordinates / summary.total_coordinates,
        upload_bytes=upload,
        rounds_completed=summary.rounds_completed if summary.kind == "federated" else None,
        tuned=tuned or None,
        tuning_trials=tuning_trials,
        duration_s=summary.duration_s,
        wall_s=wall_s,
        error="",
        round_accuracy=[r.test_accuracy for r in summary.rounds],
        config=cell.config.to_flat(),  # the cell's identity (before tuning)
    )
    return row


def failed_row(cell: Cell, error: BaseException, *, wall_s: float) -> dict[str, Any]:
    """The row of a cell that raised: its settings and the error, no metrics."""
    row = _base_row(cell)
    row.update(
        status="failed",
        error=f"{type(error).__name__}: {error}",
        wall_s=wall_s,
        config=cell.config.to_flat(),
    )
    return row


class ResultStore:
    """Rows by cell key; :meth:`add` rewrites both files atomically."""

    def __init__(self, out: Path, preset: Preset) -> None:
        self.out = out
        self.rows: dict[str, dict[str, Any]] = {}
        path = out / RESULTS_JSON
        for row in read_json(path) if path.exists() else []:
            key = cell_key(
                row["setting"], row["tuning"], preset.tuning.key(row["tuning"]), row["config"]
            )
            self.rows[key] = {**row, "cell": key}

    def done(self, cell: Cell) -> dict[str, Any] | None:
        """The successful row of ``cell`` if there is one."""
        row = self.rows.get(cell.key)
        return row if row is not None and row["status"] == "ok" else None

    def add(self, row: dict[str, Any]) -> None:
        """Record ``row`` (replacing an earlier row of its cell) and rewrite the files.

        Stored as ``results.json`` holds it (non-finite floats as ``None``), so a fresh row and
        the same row read back by a later run compare equal."""
        self.rows[row["cell"]] = to_jsonable(row)
        self.save()

    def save(self) -> None:
        rows = list(self.rows.values())
        write_json(self.out / RESULTS_JSON, rows)
        write_csv(self.out / RESULTS_CSV, _tidy(rows), _columns(rows))


def _tidy(rows: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        {
            k: (",".join(f"{a}={b}" for a, b in v.items()) if isinstance(v, dict) else v)
            for k, v in row.items()
            if k not in {"config", "round_accuracy"}
        }
        for row in rows
    ]


def _columns(rows: list[dict[str, Any]]) -> list[str]:
    extra = [
        k for r in rows for k in r if k not in CSV_COLUMNS and k not in {"config", "round_accuracy"}
    ]
    return [*CSV_COLUMNS, *dict.fromkeys(extra)]
