"""Resumable comparison of federated fedprune settings, each run a Ray simulation in a subprocess.

Every ``--setting`` (an override file, e.g. ``experiments/conf/digits/federated_dense.toml``) is
run at every combination of the ``--grid`` values, once per seed, with the one default table
(:class:`fedprune.config.RunConfig`, which ``[tool.flwr.app.config]`` in ``pyproject.toml``
repeats) under the ``--set`` base overrides, the setting's overrides and the grid point. Usage
(see ``docs/federated_results.md``)::

    python experiments/federated_compare.py \
        --setting experiments/conf/digits/federated_magnitude.toml \
        --setting experiments/conf/digits/federated_dense.toml \
        --grid privacy.target-epsilon=4,2 --seeds 0,1,2 --pair magnitude:dense \
        --out runs/federated/compare

One run at a time, each in its own process (:func:`server.simulation.run_federated`, so Ray
starts fresh and is shut down with the process group) with its own short Ray temp dir. A run
whose ``runs/<setting>-<hash>/summary.json`` already holds every round is not run again, so an
interrupted comparison resumes where it stopped (the server rewrites ``summary.json`` after every
round: a partial one is run again from the start).

Privacy ledgers: these are research runs, each reporting the epsilon of that one run, but the
simulated nodes' ledgers are persistent per dataset by default (``$FEDPRUNE_HOME/ledgers``), so
consecutive runs would compose (and soon exhaust the nodes' budget). Every run's nodes therefore
get a fresh ledger directory of their own, ``runs/<setting>-<hash>/ledgers`` (the node policy's
``ledger-dir``, :func:`server.simulation.simulated_node_policy`; otherwise the default policy:
DP required, secure noise, node budget ``max-epsilon`` 10). A run that is launched again (it
was interrupted or is stale) starts from an empty ledger: its old one is removed with its old
results.

Outputs in ``--out`` (describing the runs of this command): ``results.csv`` (one row per run),
``results.json`` (the same plus per-round accuracies), ``table.md`` (mean ± std over seeds, and
seed-paired differences for each ``--pair``), ``accuracy_per_round.png`` (mean ± std per round
per setting, round 0 being the public-only warm start, with public-only as dashed lines) and
``compare.json`` (the command).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import math
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sweep import Group, aggregate, load_overrides, parse_assignment

from fedprune.config import RunConfig
from fedprune.io import atomic_write, read_json, write_csv, write_json

__all__ = [
    "CompareSpec",
    "PlannedRun",
    "Setting",
    "completed_summary",
    "default_table",
    "format_table",
    "load_setting",
    "main",
    "paired_differences",
    "plot_rounds",
    "run_compare",
    "summary_row",
]

logger = logging.getLogger(__name__)

SETTING_PREFIX = "federated_"
"""Stripped from an override file's stem to name its setting (``federated_dense`` -> ``dense``)."""
CONFIG_COLUMNS = (
    "mask.strategy",
    "mask.density",
    "optim.lr",
    "privacy.target-epsilon",
    "data.public-kind",
    "secagg.enabled",
)
"""Resolved config values copied into every row, whatever was varied."""
DEFAULT_TIMEOUT_S = 900.0
LEDGER_DIR = "ledgers"
"""The simulated nodes' ledger directory of each run, inside its run directory."""


# --- what to run ---------------------------------------------------------------------------


def default_table() -> dict[str, Any]:
    """The flat defaults every run starts from: the one default table, ``RunConfig()``."""
    return RunConfig().to_flat()


@dataclass(frozen=True)
class Setting:
    """A named set of flat config overrides (one override file)."""

    name: str
    overrides: dict[str, Any]

    def __post_init__(self) -> None:
        if not self.name or any(c in self.name for c in "/: "):
            raise ValueError(
                f"expected a setting name without '/', ':' or spaces, got {self.name!r}"
            )


def load_setting(path: Path) -> Setting:
    """The setting of override file ``path``, named after its stem without ``federated_``."""
    stem = path.stem.removeprefix(SETTING_PREFIX)
    return Setting(name=stem.replace("_", "-"), overrides=load_overrides(path))


@dataclass(frozen=True)
class PlannedRun:
    """One federated run: a setting at a grid point and seed, with its fully resolved config."""

    setting: str
    varied: dict[str, Any]
    """The grid values and ``seed`` of this run."""
    overrides: dict[str, Any]
    """Flat overrides on the app defaults (base, setting, varied, ``out-dir``)."""
    config: RunConfig

    @property
    def out_dir(self) -> Path:
        """Where the server writes ``summary.json``."""
        return Path(self.config.out_dir)

    @property
    def run_id(self) -> str:
        """``<setting>-<hash>``: the hash covers the explicit overrides (not ``out-dir``)."""
        return self.out_dir.name

    @property
    def ledger_dir(self) -> Path:
        """The run's own ledger directory for its simulated nodes (fresh for every launch)."""
        return self.out_dir / LEDGER_DIR


@dataclass(frozen=True)
class CompareSpec:
    """Settings x grid points x seeds, on top of ``RunConfig()`` defaults and ``base``."""

    settings: list[Setting]
    base: dict[str, Any] = field(default_factory=dict)
    grid: dict[str, list[Any]] = field(default_factory=dict)
    seeds: list[int] = field(default_factory=lambda: [0])
    pairs: list[tuple[str, str]] = field(default_factory=list)
    """``(a, b)`` setting names whose seed-paired difference ``a - b`` is tabulated."""

    def __post_init__(self) -> None:
        names = [s.name for s in self.settings]
        if not names:
            raise ValueError("expected at least one setting")
        if len(set(names)) != len(names):
            raise ValueError(f"expected distinct setting names, got {names}")
        if not self.seeds:
            raise ValueError("expected at least one seed")
        for key, values in self.grid.items():
            if not values:
                raise ValueError(f"grid key {key!r}: expected at least one value")
            if key in {"seed", "out-dir"}:
                raise ValueError(f"grid key {key!r} is set by the comparison itself")
        for a, b in self.pairs:
            unknown = sorted({a, b} - set(names))
            if unknown:
                raise ValueError(f"pair {a}:{b}: unknown settings {unknown}; known: {names}")

    def points(self) -> list[dict[str, Any]]:
        """Every grid combination (one empty point for an empty grid)."""
        points: list[dict[str, Any]] = [{}]
        for key, values in self.grid.items():
            points = [{**p, key: v} for p in points for v in values]
        return points

    def plan(self, out: Path) -> list[PlannedRun]:
        """Every run, setting-major then grid point then seed; configs are checked here.

        A run's directory is named after its setting and a hash of its explicit overrides, so
        a new config key added to :class:`RunConfig` (with a default) does not rename finished
        runs; :func:`completed_summary` checks the recorded config against the resolved one.
        """
        defaults = default_table()
        runs = []
        for setting in self.settings:
            for point in self.points():
                for seed in self.seeds:
                    varied = {**point, "seed": seed}
                    overrides = {**self.base, **setting.overrides, **varied}
                    digest = hashlib.sha256(
                        json.dumps(overrides, sort_keys=True, default=str).encode()
                    ).hexdigest()[:12]
                    run_dir = (out / "runs" / f"{setting.name}-{digest}").resolve()
                    overrides["out-dir"] = str(run_dir)
                    config = RunConfig.from_flat({**defaults, **overrides})
                    runs.append(PlannedRun(setting.name, varied, overrides, config))
        return runs


# --- running -------------------------------------------------------------------------------


def completed_summary(run: PlannedRun) -> dict[str, Any] | None:
    """The run's ``summary.json`` if it is complete and was run with ``run``'s config.

    Complete: it holds all ``federated.num_rounds`` rounds (the server rewrites it after every
    round). Same config: every key recorded in its ``config`` that the current config also has
    (except ``out-dir``) has the same value, e.g. a changed app default makes the run stale;
    keys only one side knows (options added or removed since) are not compared. Returns
    ``None`` otherwise.
    """
    path = run.out_dir / "summary.json"
    if not path.exists():
        return None
    summary: dict[str, Any] = read_json(path)
    done = (summary.get("rounds_completed") or 0) >= run.config.federated.num_rounds
    accuracy = summary.get("test_accuracy")
    if not (done and accuracy is not None and math.isfinite(accuracy)):
        return None
    current = run.config.to_flat()
    recorded = summary.get("config", {})
    stale = sorted(
        k for k in recorded.keys() & current.keys() - {"out-dir"} if recorded[k] != current[k]
    )
    if stale:
        logger.warning("%s is stale (config changed: %s): running it again", run.run_id, stale)
        return None
    return summary


Launcher = Callable[[PlannedRun, float], None]
"""Runs one planned run to completion (writing its ``summary.json``) or raises."""


def launch_subprocess(run: PlannedRun, timeout_s: float) -> None:
    """Run ``run`` in a child process (its own session and Ray temp dir); raise on failure.

    The child's output goes to ``<run dir>/log.txt``. Whatever is left of the child's process
    group afterwards (Ray daemons on a crash or timeout) is terminated by group id.
    """
    run.out_dir.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(run.ledger_dir, ignore_errors=True)  # a fresh ledger for every launch
    # Not write_json: its null policy would turn an ``inf`` override (e.g. a budget) into None,
    # which the child's RunConfig rejects; json.dumps keeps ``Infinity``, which json reads back.
    text = json.dumps(run.overrides, indent=1) + "\n"
    atomic_write(run.out_dir / "overrides.json", lambda f: f.write(text.encode()))
    ray_tmp = tempfile.mkdtemp(prefix="fc", dir="/tmp")  # Ray's socket paths must stay short
    env = {**os.environ, "RAY_TMPDIR": ray_tmp, "PYTHONUNBUFFERED": "1"}
    command = [sys.executable, str(Path(__file__).resolve()), "--run-one", str(run.out_dir)]
    started = time.perf_counter()
    with (run.out_dir / "log.txt").open("w") as log:
        child = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
        try:
            code = child.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            code = None
        finally:
            _end_group(child.pid)
            shutil.rmtree(ray_tmp, ignore_errors=True)
    wall = time.perf_counter() - started
    if code != 0:
        what = f"timed out after {timeout_s:.0f} s" if code is None else f"exited with {code}"
        raise RuntimeError(f"run {run.run_id} {what}; see {run.out_dir / 'log.txt'}")
    write_json(run.out_dir / "launcher.json", {"wall_s": wall})


def _end_group(pgid: int) -> None:
    """Terminate what is left of process group ``pgid`` (ours: the child's own session)."""
    for sig, wait_s in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 0.0)):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            try:
                os.killpg(pgid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.2)


def _run_one(run_dir: Path) -> int:
    """Child process: the run whose overrides are in ``run_dir/overrides.json``, its simulated
    nodes keeping their ledgers in ``run_dir/ledgers`` (see the module docstring)."""
    from server.simulation import run_federated, simulated_node_policy

    overrides = read_json(run_dir / "overrides.json")
    config = RunConfig().replace(**overrides)
    policy = simulated_node_policy(config, ledger_dir=str(run_dir / LEDGER_DIR))
    summary = run_federated(overrides, policy=policy, progress=False)
    accuracy = summary.test_accuracy
    logger.info("test accuracy %s", "-" if accuracy is None else f"{accuracy:.4f}")
    return 0


def run_compare(
    spec: CompareSpec,
    out: Path,
    *,
    launch: Launcher = launch_subprocess,
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> list[dict[str, Any]]:
    """Run (or resume) every planned run of ``spec``, then write results, table and plot.

    A failed run is logged and left out; the others still run. Returns the rows of the
    completed runs in plan order.
    """
    out.mkdir(parents=True, exist_ok=True)
    runs = spec.plan(out)
    rows, failed = [], []
    for i, run in enumerate(runs, 1):
        summary = completed_summary(run)
        if summary is None:
            logger.info("[%d/%d] running %s %s", i, len(runs), run.setting, run.varied)
            try:
                launch(run, timeout_s)
            except RuntimeError as err:
                logger.error("%s", err)
            summary = completed_summary(run)
        else:
            logger.info("[%d/%d] done before: %s %s", i, len(runs), run.setting, run.varied)
        if summary is None:
            failed.append(run.run_id)
            continue
        rows.append(summary_row(run, summary))
        logger.info("    test accuracy %.4f", rows[-1]["test_accuracy"])
    write_results(rows, out)
    table = format_table(spec, rows, failed=failed) + "\n"
    atomic_write(out / "table.md", lambda f: f.write(table.encode()))
    plot_rounds(spec, rows, out / "accuracy_per_round.png")
    return rows


# --- results -------------------------------------------------------------------------------


def summary_row(run: PlannedRun, summary: Mapping[str, Any]) -> dict[str, Any]:
    """One result row: ids, varied and key config values, metrics and the per-round curve.

    ``summary`` is a federated ``summary.json`` (:meth:`fedprune.summary.RunSummary.to_dict`).
    ``epsilon`` is the largest per-holder (client) epsilon (``None`` without DP); ``wall_s`` is
    the launcher's wall clock (process start to exit, Ray start included) when it was recorded.
    """
    flat = run.config.to_flat()
    holders = list(summary.get("holders", {}).values())
    epsilons = [h["epsilon"] for h in holders if h.get("epsilon") is not None]
    sigmas = [h["noise_multiplier"] for h in holders if h.get("noise_multiplier") is not None]
    launcher = run.out_dir / "launcher.json"
    wall = read_json(launcher)["wall_s"] if launcher.exists() else None
    return {
        "run_id": run.run_id,
        "setting": run.setting,
        **run.varied,
        **{k: flat[k] for k in CONFIG_COLUMNS},
        "test_accuracy": summary["test_accuracy"],
        "public_only_test_accuracy": summary["public_only_test_accuracy"],
        "gain": summary["test_accuracy"] - summary["public_only_test_accuracy"],
        "test_loss": next(
            (
                r["test_loss"]
                for r in reversed(summary.get("rounds", []))
                if r.get("test_loss") is not None
            ),
            None,
        ),
        "epsilon": max(epsilons) if epsilons else None,
        "noise_multiplier": statistics.fmean(sigmas) if sigmas else None,
        "trained_coordinates": summary.get("trained_coordinates"),
        "total_coordinates": summary.get("total_coordinates"),
        "rounds_completed": summary.get("rounds_completed"),
        "duration_s": summary.get("duration_s"),
        "wall_s": wall,
        "round_accuracy": [r.get("test_accuracy") for r in summary.get("rounds", [])],
    }


def write_results(rows: Sequence[dict[str, Any]], out: Path) -> None:
    """``results.json`` (every field) and ``results.csv`` (without the per-round curve)."""
    write_json(out / "results.json", list(rows))
    columns = list(dict.fromkeys(k for r in rows for k in r if k != "round_accuracy"))
    write_csv(out / "results.csv", rows, columns, extrasaction="ignore")


def _pct(group: Group, metric: str) -> str:
    return f"{100 * group.mean(metric):.1f} ± {100 * group.std(metric):.1f}"


def _seconds(group: Group, metric: str) -> str:
    values = [r[metric] for r in group.rows if r.get(metric) is not None]
    return f"{statistics.fmean(values):.0f}" if values else "-"


def _md_table(header: Sequence[str], body: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(cells) + " |" for cells in body]


def _cell(key: str, row: Mapping[str, Any]) -> str:
    """A config value as a table cell (``none`` trains every coordinate: density 1)."""
    value = row[key]
    if key == "mask.density" and row.get("mask.strategy") == "none":
        return "1"
    if isinstance(value, bool):
        return "on" if value else "off"
    return f"{value:g}" if isinstance(value, float) else str(value)


def format_table(
    spec: CompareSpec, rows: Sequence[dict[str, Any]], *, failed: Sequence[str] = ()
) -> str:
    """Markdown: accuracy per setting and grid point, then the seed-paired differences.

    Besides the setting and grid keys, the table shows the resolved :data:`CONFIG_COLUMNS`
    (from each group's first run) so every row reads on its own.
    """
    keys = ["setting", *spec.grid]
    shown = [k for k in CONFIG_COLUMNS if k not in spec.grid]
    lines = [
        f"Test accuracy in % (mean ± std over seeds {spec.seeds}, std with ddof=1); gain = "
        "federated minus public-only (warm start) accuracy of the same seed; ε = largest "
        "per-client ε; test loss = final cross-entropy (mean); time = wall clock per run in s "
        "(process start to exit).",
        "",
    ]
    metrics = [
        "test acc",
        "public-only acc",
        "gain",
        "test loss",
        "ε",
        "trained coords",
        "time",
        "n",
    ]
    lines += _md_table(
        [*keys, *shown, *metrics],
        [
            [
                *(_cell(k, g.rows[0]) for k in keys),
                *(_cell(k, g.rows[0]) for k in shown),
                _pct(g, "test_accuracy"),
                _pct(g, "public_only_test_accuracy"),
                _pct(g, "gain"),
                f"{g.mean('test_loss'):.3f}",
                "-" if math.isnan(g.mean("epsilon")) else f"{g.mean('epsilon'):.2f}",
                f"{g.mean('trained_coordinates'):.0f}",
                _seconds(g, "wall_s"),
                str(len(g.rows)),
            ]
            for g in aggregate(rows, keys)
        ],
    )
    diffs = paired_differences(spec, rows)
    if diffs:
        lines += [
            "",
            "Seed-paired differences of test accuracy in percentage points (mean ± std over "
            "the seeds both settings completed; wins = seeds where the first is higher).",
            "",
        ]
        lines += _md_table(
            ["comparison", *spec.grid, "difference", "wins", "n"],
            [
                [
                    f"{d['a']} − {d['b']}",
                    *(_cell(k, d) for k in spec.grid),
                    f"{d['mean']:+.1f} ± {d['std']:.1f}",
                    f"{d['wins']}/{d['n']}",
                    str(d["n"]),
                ]
                for d in diffs
            ],
        )
    if failed:
        lines += ["", f"Failed runs (left out): {', '.join(failed)}."]
    return "\n".join(lines)


def paired_differences(spec: CompareSpec, rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """For each ``spec.pairs`` ``(a, b)`` and grid point: ``a - b`` test accuracy per seed.

    Returns dicts with ``a``, ``b``, the grid values, ``mean`` and ``std`` (percentage points,
    std with ddof=1, 0 for one seed), ``wins`` (seeds with a higher ``a``) and ``n``; pairs
    without a common seed at a point are left out.
    """
    by_key = {
        (r["setting"], tuple(r[k] for k in spec.grid), r["seed"]): r["test_accuracy"] for r in rows
    }
    diffs = []
    for a, b in spec.pairs:
        for point in spec.points():
            values = tuple(point[k] for k in spec.grid)
            d = [
                100 * (by_key[(a, values, s)] - by_key[(b, values, s)])
                for s in spec.seeds
                if (a, values, s) in by_key and (b, values, s) in by_key
            ]
            if not d:
                continue
            diffs.append(
                {
                    "a": a,
                    "b": b,
                    **point,
                    "mean": statistics.fmean(d),
                    "std": statistics.stdev(d) if len(d) > 1 else 0.0,
                    "wins": sum(x > 0 for x in d),
                    "n": len(d),
                }
            )
    return diffs


def plot_rounds(spec: CompareSpec, rows: Sequence[dict[str, Any]], path: Path) -> None:
    """Test accuracy per round (mean ± std over seeds), one panel per grid point and one line per
    setting; round 0 is the public-only warm start, also drawn as a dashed line per public-only
    level (labelled with its settings when a panel has more than one level)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    points = spec.points()
    fig, axes = plt.subplots(
        1, len(points), figsize=(5.2 * len(points), 4.2), sharey=True, squeeze=False
    )
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, point in zip(axes[0], points, strict=True):
        at_point = [r for r in rows if all(r[k] == v for k, v in point.items())]
        public: dict[float, list[str]] = {}
        for i, group in enumerate(aggregate(at_point, ["setting"])):
            curves = [[r["public_only_test_accuracy"], *r["round_accuracy"]] for r in group.rows]
            length = min(len(c) for c in curves)
            per_round = [[c[t] for c in curves] for t in range(length)]
            if any(None in values for values in per_round):
                logger.warning("%s at %s: a round has no accuracy; not plotted", group.key, point)
                continue
            mean = [100 * statistics.fmean(v) for v in per_round]
            std = [100 * statistics.stdev(v) if len(v) > 1 else 0.0 for v in per_round]
            colour = colours[i % len(colours)]
            ax.plot(
                range(length),
                mean,
                marker="o",
                markersize=3,
                color=colour,
                label=group.key["setting"],
            )
            ax.fill_between(
                range(length),
                [m - s for m, s in zip(mean, std, strict=True)],
                [m + s for m, s in zip(mean, std, strict=True)],
                color=colour,
                alpha=0.15,
            )
            level = round(group.mean("public_only_test_accuracy"), 9)
            public.setdefault(level, []).append(group.key["setting"])
        for level, names in public.items():
            ax.axhline(100 * level, color="grey", linestyle="--", linewidth=1)
            # Name the settings only when their public-only levels differ (a long label of
            # every setting would squeeze the axes).
            ax.annotate(
                "public only" if len(public) == 1 else f"public only ({', '.join(names)})",
                (0, 100 * level),
                xytext=(2, -10),
                textcoords="offset points",
                fontsize="x-small",
                color="grey",
            )
        title = ", ".join(f"{k}={v}" for k, v in point.items())
        ax.set_title(title or "all runs", fontsize="medium")
        ax.set_xlabel("round (0 = public-only warm start)")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small", loc="best")
    axes[0][0].set_ylabel("test accuracy (%)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# --- command line ----------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    """The comparison's argument parser."""
    parser = argparse.ArgumentParser(
        prog="federated_compare",
        description="Resumable comparison of federated fedprune settings "
        "(docs/federated_results.md).",
    )
    parser.add_argument(
        "--setting",
        action="append",
        default=[],
        type=Path,
        metavar="TOML",
        help="override file of one setting, named after its stem (repeat)",
    )
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="base override (repeat)"
    )
    parser.add_argument(
        "--grid", action="append", default=[], metavar="KEY=V1,V2", help="grid axis (repeat)"
    )
    parser.add_argument("--seeds", default="0", help="comma-separated seeds [0]")
    parser.add_argument(
        "--pair", action="append", default=[], metavar="A:B", help="tabulate A - B per seed"
    )
    parser.add_argument("--out", type=Path, help="output directory")
    parser.add_argument(
        "--timeout", type=float, default=DEFAULT_TIMEOUT_S, help="seconds per run [%(default)s]"
    )
    parser.add_argument("--run-one", type=Path, help=argparse.SUPPRESS)  # child process mode
    return parser


def spec_from_args(args: argparse.Namespace) -> CompareSpec:
    """The :class:`CompareSpec` described by parsed command-line ``args``."""
    base: dict[str, Any] = {}
    for text in args.set:
        key, values = parse_assignment(text)
        if len(values) != 1:
            raise ValueError(f"--set takes one value, got {text!r}")
        base[key] = values[0]
    grid: dict[str, list[Any]] = {}
    for text in args.grid:
        key, values = parse_assignment(text)
        if key in grid:
            raise ValueError(f"--grid {key!r} given twice")
        grid[key] = values
    try:
        seeds = [int(s) for s in args.seeds.split(",")]
    except ValueError:
        raise ValueError(f"--seeds: expected comma-separated ints, got {args.seeds!r}") from None
    pairs = []
    for text in args.pair:
        a, sep, b = text.partition(":")
        if not sep or not a or not b:
            raise ValueError(f"--pair: expected A:B, got {text!r}")
        pairs.append((a, b))
    settings = [load_setting(p) for p in args.setting]
    return CompareSpec(settings=settings, base=base, grid=grid, seeds=seeds, pairs=pairs)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the comparison described on the command line; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(levelname)s %(name)s: %(message)s", force=True
    )  # force: importing Opacus may already have configured the root logger
    if args.run_one is not None:
        return _run_one(args.run_one)
    if args.out is None:
        parser.error("--out is required")
    try:
        spec = spec_from_args(args)
        spec.plan(args.out)  # fail at start on bad overrides
    except (ValueError, FileNotFoundError) as err:
        parser.exit(2, f"federated_compare: error: {err}\n")
    args.out.mkdir(parents=True, exist_ok=True)
    write_json(
        args.out / "compare.json",
        {
            "argv": list(sys.argv if argv is None else argv),
            "settings": {s.name: s.overrides for s in spec.settings},
            "base": spec.base,
            "grid": spec.grid,
            "seeds": spec.seeds,
        },
    )
    rows = run_compare(spec, args.out, timeout_s=args.timeout)
    print((args.out / "table.md").read_text())
    planned = len(spec.plan(args.out))
    logger.info("%d/%d runs completed; results in %s", len(rows), planned, args.out)
    return 0 if len(rows) == planned else 1


if __name__ == "__main__":
    sys.exit(main())
