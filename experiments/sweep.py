"""Resumable grid sweeps of centralised fedprune runs, with a seed-averaged table and a plot.

Every combination of the ``--grid`` values is run once per seed with
:func:`fedprune.training.centralised.run_centralised`. With ``--tune``, each combination first
runs every tuning value on a *validation* split carved out of the training data (the test set is
never looked at), picks the value with the best seed-averaged validation accuracy, and only then
runs that value on the test set. Usage (see ``experiments/README.md``)::

    python experiments/sweep.py --base experiments/conf/digits/strategies.toml \
        --grid mask.strategy=none,random,magnitude --grid privacy.target-epsilon=1,2 \
        --seeds 0,1,2 --tune optim.lr=0.05,0.1,0.2,0.5 --out runs/sweeps/digits-strategies

Outputs in ``--out``: ``results.csv`` and ``results.json`` (one row per run, rewritten after every
run), ``runs/<run-id>/summary.json`` (each run's results and fully resolved config), ``table.md``
(mean ± std over seeds), ``accuracy_vs_epsilon.png`` and ``sweep.json`` (the command). A run whose
row already exists (same resolved config) is skipped, so an interrupted sweep resumes where it
stopped.

Privacy ledgers: these are research runs, each reporting the epsilon of that one run. Every run
therefore gets its own fresh, persistent ledger directory ``runs/<run-id>/ledger`` (a
:class:`~fedprune.privacy.ledger_store.LedgerStore`, as ``fedprune train --ledger-dir``), so
runs of a sweep never compose with each other, with other sweeps, or with ``fedprune train``
runs. A run that is executed again (interrupted, or its config changed) starts from an empty
ledger: its old ledger is removed together with its old results. DP noise is secure (not
reproducible from the seed), so a repeated seed gives another noise draw.
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import logging
import math
import shutil
import statistics
import sys
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from torch.utils.data import TensorDataset
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from fedprune.config import RunConfig
from fedprune.data import DATASETS, DatasetBundle, load_dataset, register_dataset
from fedprune.io import atomic_write, read_json, to_jsonable, write_csv, write_json
from fedprune.privacy.ledger_store import LedgerStore
from fedprune.summary import RunSummary
from fedprune.training.centralised import CENTRAL_HOLDER, run_centralised

__all__ = [
    "Group",
    "SweepSpec",
    "aggregate",
    "build_parser",
    "config_hash",
    "load_overrides",
    "main",
    "parse_assignment",
    "plot_accuracy",
    "register_validation_dataset",
    "run_sweep",
    "spec_from_args",
    "summary_metrics",
    "write_report",
]

logger = logging.getLogger(__name__)

Phase = Literal["tune", "final"]
VALIDATION_SUFFIX = "-val"
VALIDATION_FRACTION = 0.2
"""Share of the training set held out (stratified, fixed) as the tuning validation set."""
METRICS = (
    "test_accuracy",
    "public_only_test_accuracy",
    "epsilon",
    "noise_multiplier",
    "trained_coordinates",
    "trained_density",
    "duration_s",
)
"""Row fields from each run's summary (:func:`summary_metrics`); for ``tune`` rows "test" means
the validation split."""
EPSILON_KEY = "privacy.target-epsilon"
LEDGER_DIR = "ledger"
"""Each run's own ledger directory, inside its run directory."""


# --- configuration ---------------------------------------------------------------------------


def load_overrides(path: Path) -> dict[str, Any]:
    """Flat config overrides from a TOML file.

    Keys are flat kebab keys (``"mask.density" = 0.05``) or tables (``[mask]`` then
    ``density = 0.05``); both flatten to ``"mask.density"``. Values are checked when a
    :class:`~fedprune.config.RunConfig` is built from them.
    """
    with path.open("rb") as f:
        return _flatten(tomllib.load(f))


def _flatten(table: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in table.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(_flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def parse_assignment(text: str) -> tuple[str, list[Any]]:
    """Parse ``"key=v1,v2,..."`` into the key and its values, typed like the key's default.

    Raises ``ValueError`` for a missing ``=``, an unknown key, an empty value list or a value of
    the wrong type (``"optim.epochs=1.5"``).
    """
    key, sep, values = text.partition("=")
    key = key.strip()
    if not sep or not values.strip():
        raise ValueError(f"expected KEY=V1,V2,..., got {text!r}")
    defaults = RunConfig().to_flat()
    if key not in defaults:
        raise ValueError(f"unknown config key {key!r}; known keys: {sorted(defaults)}")
    return key, [_typed(key, v.strip(), defaults[key]) for v in values.split(",")]


def _typed(key: str, text: str, default: Any) -> Any:
    """``text`` as the type of ``default`` (bool before int: ``bool`` subclasses ``int``)."""
    if isinstance(default, bool):
        if text.lower() not in {"true", "false"}:
            raise ValueError(f"config {key}: expected true or false, got {text!r}")
        return text.lower() == "true"
    for kind, expected in ((int, "an integer"), (float, "a number")):
        if isinstance(default, kind):
            try:
                return kind(text)
            except ValueError:
                raise ValueError(f"config {key}: expected {expected}, got {text!r}") from None
    return text


@dataclass(frozen=True)
class SweepSpec:
    """What to run: base overrides, a grid, seeds and optional per-combination tuning.

    Attributes
    ----------
    base:
        Flat overrides applied to ``RunConfig()`` defaults for every run.
    grid:
        Key -> values; every combination (cartesian product, in the given order) is one point.
    seeds:
        Each point (and each tuning candidate) runs once per seed; results are averaged over them.
    tune:
        Key -> candidate values, tried on the validation split for every grid point; the candidate
        with the highest mean validation accuracy (first on ties) is used for the test runs.
    """

    base: dict[str, Any]
    grid: dict[str, list[Any]]
    seeds: list[int] = field(default_factory=lambda: [0])
    tune: dict[str, list[Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.seeds:
            raise ValueError("expected at least one seed")
        for what, table in (("grid", self.grid), ("tune", self.tune)):
            for key, values in table.items():
                if not values:
                    raise ValueError(f"{what} key {key!r}: expected at least one value")
                if key in {"seed", "out-dir"}:
                    raise ValueError(f"{what} key {key!r} is set by the sweep itself")
        overlap = sorted(set(self.grid) & set(self.tune))
        if overlap:
            raise ValueError(f"keys {overlap} are both in the grid and tuned")
        base = RunConfig().replace(**self.base)  # fail at start on bad overrides or values
        for key, values in [*self.grid.items(), *self.tune.items()]:
            for value in values:
                base.replace(**{key: value})

    def points(self) -> list[dict[str, Any]]:
        """Every grid combination as a dict (one empty point when the grid is empty)."""
        return _product(self.grid)

    def candidates(self) -> list[dict[str, Any]]:
        """Every tuning combination (one empty candidate when nothing is tuned)."""
        return _product(self.tune)

    def num_runs(self) -> int:
        """Planned runs: tuning runs (if any) plus test runs."""
        per_point = (len(self.candidates()) if self.tune else 0) + 1
        return len(self.points()) * per_point * len(self.seeds)


def _product(table: Mapping[str, list[Any]]) -> list[dict[str, Any]]:
    return [dict(zip(table, combo, strict=True)) for combo in itertools.product(*table.values())]


# --- validation split for tuning -------------------------------------------------------------


def register_validation_dataset(base: str) -> str:
    """Register (once) ``"<base>-val"``: ``base``'s training set split into train and validation.

    A stratified, fixed (``random_state=0``) ``VALIDATION_FRACTION`` of ``base``'s *training*
    records becomes the "test" set of the new dataset and the rest its training set; ``base``'s
    real test set is not part of it. Tuning runs on this dataset therefore never see the test set.
    Returns the new name.
    """
    name = f"{base}{VALIDATION_SUFFIX}"
    if name in DATASETS:
        return name

    @register_dataset(name)
    def _load(data_dir: Path | None, download: bool, seed: int) -> DatasetBundle:
        from sklearn.model_selection import train_test_split

        bundle = load_dataset(base, data_dir=data_dir, download=download, seed=seed)
        x, y = bundle.train.tensors
        train_idx, val_idx = (
            torch.tensor(idx)
            for idx in train_test_split(
                range(len(y)), test_size=VALIDATION_FRACTION, stratify=y.numpy(), random_state=0
            )
        )
        return DatasetBundle(
            name=name,
            train=TensorDataset(x[train_idx], y[train_idx]),
            test=TensorDataset(x[val_idx], y[val_idx]),
            num_classes=bundle.num_classes,
        )

    return name


# --- running ---------------------------------------------------------------------------------


def config_hash(flat: Mapping[str, Any]) -> str:
    """Identity of a run: a hash of its resolved flat config, stable as ``RunConfig`` evolves.

    Keeps only keys that exist in today's ``RunConfig`` and differ from today's default (after
    mapping non-finite floats to ``None``, as ``summary.json`` stores them), without
    ``out-dir``. So a finished run still matches after fedprune adds a config key (at a default
    that keeps the old behaviour) or removes one, while a changed default changes the identity.
    Start a new output directory when a change to fedprune changes what a run does.
    """
    defaults = to_jsonable(RunConfig().to_flat())
    kept = {
        k: v
        for k, v in to_jsonable(dict(flat)).items()
        if k != "out-dir" and k in defaults and defaults[k] != v
    }
    return hashlib.sha256(json.dumps(kept, sort_keys=True).encode()).hexdigest()[:12]


@dataclass(frozen=True)
class _Run:
    phase: Phase
    varied: dict[str, Any]
    """Grid and tuned keys of this run, plus ``seed``."""
    config: RunConfig
    config_hash: str

    @property
    def run_id(self) -> str:
        return f"{self.phase}-{self.config_hash}"

    @property
    def ledger_dir(self) -> Path:
        """The run's own ledger directory (``runs/<run-id>/ledger``)."""
        return Path(self.config.out_dir) / LEDGER_DIR


def _make_run(spec: SweepSpec, phase: Phase, varied: dict[str, Any], out: Path) -> _Run:
    overrides = {**spec.base, **varied}
    if phase == "tune":
        dataset = RunConfig().replace(**spec.base).data.dataset
        overrides["data.dataset"] = register_validation_dataset(dataset)
    digest = config_hash(RunConfig().replace(**overrides).to_flat())
    out_dir = out / "runs" / f"{phase}-{digest}"
    config = RunConfig().replace(**{**overrides, "out-dir": str(out_dir)})
    return _Run(phase=phase, varied=varied, config=config, config_hash=digest)


def summary_metrics(summary: RunSummary) -> dict[str, Any]:
    """The :data:`METRICS` of a centralised run's summary (its one holder's spend)."""
    holder = summary.holders.get(str(CENTRAL_HOLDER))
    return {
        "test_accuracy": summary.test_accuracy,
        "public_only_test_accuracy": summary.public_only_test_accuracy,
        "epsilon": summary.epsilon,
        "noise_multiplier": None if holder is None else holder.noise_multiplier,
        "trained_coordinates": summary.trained_coordinates,
        "trained_density": summary.trained_coordinates / summary.total_coordinates,
        "duration_s": summary.duration_s,
    }


def _row(run: _Run, summary: RunSummary) -> dict[str, Any]:
    """The run's result row, as ``results.json`` stores it (non-finite values as ``None``), so a
    fresh row and the same row read back on resume compare and group alike."""
    row: dict[str, Any] = {
        "run_id": run.run_id,
        "phase": run.phase,
        "eval_set": "validation" if run.phase == "tune" else "test",
        **run.varied,
    }
    metrics = summary_metrics(summary)
    row.update({k: metrics[k] for k in METRICS})
    return dict(to_jsonable(row))


def _train(run: _Run) -> RunSummary:
    """Run ``run`` with a fresh ledger of its own (see the module docstring)."""
    shutil.rmtree(run.ledger_dir, ignore_errors=True)
    return run_centralised(run.config, ledger_store=LedgerStore(run.ledger_dir), progress=False)


class _Results:
    """The rows of one output directory, rewritten (atomically) after every added row.

    Existing rows are found again by :func:`config_hash` of the config stored in their
    ``runs/<run_id>/summary.json``, recomputed against today's defaults.
    """

    def __init__(self, out: Path) -> None:
        self.out = out
        path = out / "results.json"
        rows: list[dict[str, Any]] = read_json(path) if path.exists() else []
        self.rows = {row["run_id"]: row for row in rows}
        self.by_hash: dict[str, dict[str, Any]] = {}
        for row in rows:
            summary = out / "runs" / row["run_id"] / "summary.json"
            if summary.exists():
                self.by_hash.setdefault(config_hash(read_json(summary)["config"]), row)

    def find(self, run: _Run) -> dict[str, Any] | None:
        """The existing row of ``run`` (same config), if any."""
        return self.by_hash.get(run.config_hash)

    def add(self, run: _Run, row: dict[str, Any]) -> None:
        """Record ``run``'s new ``row`` and rewrite ``results.json`` and ``results.csv``."""
        self.rows[row["run_id"]] = self.by_hash[run.config_hash] = row
        self.save()

    def save(self) -> None:
        """Rewrite ``results.json`` and ``results.csv`` from all rows."""
        rows = list(self.rows.values())
        write_json(self.out / "results.json", rows)
        write_csv(self.out / "results.csv", rows, list(dict.fromkeys(k for r in rows for k in r)))


def run_sweep(spec: SweepSpec, out: Path, *, progress: bool = True) -> list[dict[str, Any]]:
    """Run (or resume) ``spec`` into ``out``; write results, ``table.md`` and the plot.

    Parameters
    ----------
    spec:
        What to run.
    out:
        Output directory; a run whose resolved config matches that of a row already in
        ``out/results.json`` (see :func:`config_hash`) is not run again.
    progress:
        Show a tqdm bar over all planned runs.

    Returns
    -------
    list[dict]
        The rows of this sweep's planned runs (tuning rows first per point), in plan order.
    """
    out.mkdir(parents=True, exist_ok=True)
    results = _Results(out)
    planned: list[dict[str, Any]] = []
    bar = tqdm(total=spec.num_runs(), desc="sweep", disable=not progress, unit="run")
    with bar, logging_redirect_tqdm():
        for point in spec.points():
            chosen: dict[str, Any] = {}
            if spec.tune:
                tune_rows = [
                    _execute(spec, "tune", {**point, **c}, out, results, bar)
                    for c in spec.candidates()
                ]
                planned += [r for rows in tune_rows for r in rows]
                chosen = _best(spec.candidates(), tune_rows)
                logger.info("point %s: tuned %s", point, chosen)
            planned += _execute(spec, "final", {**point, **chosen}, out, results, bar)
    results.save()
    write_report(spec, planned, out)
    return planned


def _execute(
    spec: SweepSpec,
    phase: Phase,
    varied: dict[str, Any],
    out: Path,
    results: _Results,
    bar: tqdm,
) -> list[dict[str, Any]]:
    """Run ``varied`` once per seed (skipping existing rows); return the rows."""
    rows = []
    for seed in spec.seeds:
        run = _make_run(spec, phase, {**varied, "seed": seed}, out)
        row = results.find(run)
        if row is None:
            row = _row(run, _train(run))
            results.add(run, row)
        rows.append(row)
        bar.set_postfix(phase=phase, acc=f"{row['test_accuracy']:.3f}")
        bar.update()
    return rows


def _best(candidates: list[dict[str, Any]], rows: list[list[dict[str, Any]]]) -> dict[str, Any]:
    """The candidate with the highest mean accuracy (the first one on ties)."""
    means = [statistics.fmean(r["test_accuracy"] for r in runs) for runs in rows]
    return candidates[max(range(len(candidates)), key=lambda i: (means[i], -i))]


# --- reporting -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Group:
    """Runs that differ only in their seed, with seed statistics (std uses ``ddof=1``)."""

    key: dict[str, Any]
    rows: list[dict[str, Any]]

    def mean(self, metric: str) -> float:
        """Mean of ``metric`` over the seeds (``nan`` if any run has none, e.g. epsilon)."""
        values = [r[metric] for r in self.rows]
        return math.nan if None in values else statistics.fmean(values)

    def std(self, metric: str) -> float:
        """Sample standard deviation of ``metric`` over the seeds (0 for a single seed)."""
        values = [r[metric] for r in self.rows]
        if None in values:
            return math.nan
        return statistics.stdev(values) if len(values) > 1 else 0.0


def aggregate(rows: Sequence[dict[str, Any]], keys: Sequence[str]) -> list[Group]:
    """Group ``rows`` by the values of ``keys`` (first-appearance order)."""
    groups: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault(tuple(row.get(k) for k in keys), []).append(row)
    return [Group(dict(zip(keys, k, strict=True)), g) for k, g in groups.items()]


def _pct(group: Group, metric: str) -> str:
    return f"{100 * group.mean(metric):.1f} ± {100 * group.std(metric):.1f}"


def _md_table(header: Sequence[str], body: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(cells) + " |" for cells in body]


def write_report(spec: SweepSpec, rows: Sequence[dict[str, Any]], out: Path) -> None:
    """Write ``table.md`` (final and tuning tables) and ``accuracy_vs_epsilon.png``."""
    keys = [*spec.grid, *spec.tune]
    final = aggregate([r for r in rows if r["phase"] == "final"], keys)
    lines = [f"Test accuracy in % (mean ± std over seeds {spec.seeds}, std with ddof=1).", ""]
    lines += _md_table(
        [*keys, "test acc", "public-only acc", "ε", "trained coords", "n"],
        [
            [
                *(str(g.key[k]) for k in keys),
                _pct(g, "test_accuracy"),
                _pct(g, "public_only_test_accuracy"),
                "non-private" if math.isnan(g.mean("epsilon")) else f"{g.mean('epsilon'):.2f}",
                f"{g.mean('trained_coordinates'):.0f}",
                str(len(g.rows)),
            ]
            for g in final
        ],
    )
    if spec.tune:
        chosen = {tuple(g.key.values()) for g in final}
        tuning = aggregate([r for r in rows if r["phase"] == "tune"], keys)
        lines += [
            "",
            f"Tuning of {list(spec.tune)}: accuracy in % on the validation split "
            f"({VALIDATION_FRACTION:.0%} of the training set, never the test set); * = chosen.",
            "",
        ]
        lines += _md_table(
            [*keys, "validation acc", "chosen"],
            [
                [
                    *(str(g.key[k]) for k in keys),
                    _pct(g, "test_accuracy"),
                    "*" if tuple(g.key.values()) in chosen else "",
                ]
                for g in tuning
            ],
        )
    text = "\n".join(lines) + "\n"
    atomic_write(out / "table.md", lambda f: f.write(text.encode()))
    plot_accuracy(spec, final, out / "accuracy_vs_epsilon.png")


def plot_accuracy(spec: SweepSpec, groups: list[Group], path: Path) -> None:
    """Test accuracy (mean ± std) against achieved epsilon, one line per setting of the other
    grid keys, with the public-only (warm start) accuracy as a dashed line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series_keys = [k for k in spec.grid if k != EPSILON_KEY]
    series: dict[tuple[Any, ...], list[Group]] = {}
    for g in groups:
        series.setdefault(tuple(g.key[k] for k in series_keys), []).append(g)
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    for values, members in series.items():
        points = sorted(
            (g for g in members if not math.isnan(g.mean("epsilon"))),
            key=lambda g: g.mean("epsilon"),
        )
        if not points:
            logger.warning("no epsilon for %s (non-private?): not plotted", values)
            continue
        label = ", ".join(
            f"{k.split('.')[-1]}={v}" for k, v in zip(series_keys, values, strict=True)
        )
        ax.errorbar(
            [g.mean("epsilon") for g in points],
            [100 * g.mean("test_accuracy") for g in points],
            yerr=[100 * g.std("test_accuracy") for g in points],
            marker="o",
            capsize=3,
            label=label or "runs",
        )
    public = sorted({round(g.mean("public_only_test_accuracy"), 9) for g in groups})
    for i, value in enumerate(public):
        ax.axhline(
            100 * value,
            color="grey",
            linestyle="--",
            linewidth=1,
            label="public only (warm start)" if i == 0 else None,
        )
    ax.set_xlabel("ε (achieved, δ as configured)")
    ax.set_ylabel("test accuracy (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# --- command line ----------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    """The sweep's argument parser."""
    parser = argparse.ArgumentParser(
        prog="sweep",
        description="Resumable grid sweep of centralised fedprune runs (experiments/README.md).",
    )
    parser.add_argument("--base", type=Path, help="override TOML (experiments/conf/...)")
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="base override (repeat)"
    )
    parser.add_argument(
        "--grid", action="append", default=[], metavar="KEY=V1,V2", help="grid axis (repeat)"
    )
    parser.add_argument(
        "--tune",
        action="append",
        default=[],
        metavar="KEY=V1,V2",
        help="tune per grid point on a validation split (repeat)",
    )
    parser.add_argument("--seeds", default="0", help="comma-separated seeds [0]")
    parser.add_argument("--out", type=Path, required=True, help="output directory")
    parser.add_argument("--threads", type=int, default=1, help="torch threads [1]")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def spec_from_args(args: argparse.Namespace) -> SweepSpec:
    """Build the :class:`SweepSpec` described by parsed command-line ``args``."""
    base = load_overrides(args.base) if args.base else {}
    for text in args.set:
        key, values = parse_assignment(text)
        if len(values) != 1:
            raise ValueError(f"--set takes one value, got {text!r}")
        base[key] = values[0]
    axes: dict[str, dict[str, list[Any]]] = {"grid": {}, "tune": {}}
    for what in axes:
        for text in getattr(args, what):
            key, values = parse_assignment(text)
            if key in axes[what]:
                raise ValueError(f"--{what} {key!r} given twice")
            axes[what][key] = values
    try:
        seeds = [int(s) for s in args.seeds.split(",")]
    except ValueError:
        raise ValueError(f"--seeds: expected comma-separated ints, got {args.seeds!r}") from None
    return SweepSpec(base=base, grid=axes["grid"], seeds=seeds, tune=axes["tune"])


def main(argv: Sequence[str] | None = None) -> int:
    """Run the sweep described on the command line; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    torch.set_num_threads(args.threads)  # 2 cores shared with colleagues: one by default
    try:
        spec = spec_from_args(args)
    except ValueError as err:
        parser.exit(2, f"sweep: error: {err}\n")
    args.out.mkdir(parents=True, exist_ok=True)
    write_json(
        args.out / "sweep.json",
        {
            "argv": list(sys.argv if argv is None else argv),
            "base": spec.base,
            "grid": spec.grid,
            "tune": spec.tune,
            "seeds": spec.seeds,
        },
    )
    rows = run_sweep(spec, args.out, progress=not args.quiet)
    print((args.out / "table.md").read_text())
    logger.info("%d runs; results in %s", len(rows), args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
