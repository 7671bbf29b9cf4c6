"""The comparison's report: ``report.md`` (mean ± std over seeds) and PNG plots.

Every table and plot groups runs that differ only in their seed. Accuracies are reported at the
cell's *total* epsilon: the run's own for ``none``/``public`` tuning (public tuning is free),
the whole search's for ``private`` tuning, so rows with equal ``target ε`` are at equal total ε.
"""

from __future__ import annotations

import logging
import math
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fedprune.io import atomic_write

__all__ = ["GROUP_KEYS", "Group", "group_rows", "write_report"]

logger = logging.getLogger(__name__)

GROUP_KEYS = (
    "setting",
    "tuning",
    "public_kind",
    "target_epsilon",
    "strategy",
    "mode",
    "density",
)
"""What identifies a row up to its seed (plus any other grid key present in the rows)."""

PLOTS = (
    "accuracy_vs_density.png",
    "accuracy_vs_epsilon.png",
    "public_shift.png",
    "upload_vs_accuracy.png",
    "accuracy_vs_total_epsilon.png",
)


@dataclass(frozen=True)
class Group:
    """Runs equal up to their seed; statistics skip missing values (std with ddof=1)."""

    key: dict[str, Any]
    rows: list[dict[str, Any]]

    def values(self, metric: str) -> list[float]:
        return [r[metric] for r in self.rows if r.get(metric) is not None]

    def mean(self, metric: str) -> float:
        v = self.values(metric)
        return statistics.fmean(v) if v else math.nan

    def std(self, metric: str) -> float:
        v = self.values(metric)
        return statistics.stdev(v) if len(v) > 1 else 0.0


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    return "-" if value is None else str(value)


def group_rows(rows: Sequence[dict[str, Any]], keys: Sequence[str]) -> list[Group]:
    """Group ``rows`` by ``keys`` (first-appearance order)."""
    groups: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault(tuple(row.get(k) for k in keys), []).append(row)
    return [Group(dict(zip(keys, k, strict=True)), g) for k, g in groups.items()]


def _extra_keys(rows: Sequence[dict[str, Any]]) -> list[str]:
    """Grid keys beyond :data:`GROUP_KEYS` (columns named like flat config keys)."""
    return list(dict.fromkeys(k for r in rows for k in r if "." in k))


def _pct(group: Group, metric: str = "test_accuracy") -> str:
    if not group.values(metric):
        return "-"
    return f"{100 * group.mean(metric):.1f} ± {100 * group.std(metric):.1f}"


def _dense_delta(
    group: Group, dense: dict[tuple[Any, ...], dict[int, float]], keys: list[str]
) -> str:
    """Mean ± std over seeds of (this - dense) test accuracy in points, same seed and setting."""
    ref = dense.get(tuple(group.key[k] for k in keys))
    if ref is None or group.key["strategy"] == "none":
        return ""
    diffs = [
        100 * (r["test_accuracy"] - ref[r["seed"]])
        for r in group.rows
        if r["seed"] in ref and r.get("test_accuracy") is not None
    ]
    if not diffs:
        return ""
    std = statistics.stdev(diffs) if len(diffs) > 1 else 0.0
    return f"{statistics.fmean(diffs):+.1f} ± {std:.1f}"


def _table(header: Sequence[str], body: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(cells) + " |" for cells in body]


def write_report(rows: Sequence[dict[str, Any]], out: Path, *, title: str) -> Path:
    """Write ``out/report.md`` and the plots from ``rows`` (the current grid's); returns the
    report's path."""
    ok = [r for r in rows if r["status"] == "ok"]
    failed = [r for r in rows if r["status"] != "ok"]
    keys = [*GROUP_KEYS, *_extra_keys(ok)]
    groups = group_rows(ok, keys)
    context = [k for k in keys if k not in {"strategy", "mode", "density"}]
    dense = {
        tuple(g.key[k] for k in context): {r["seed"]: r["test_accuracy"] for r in g.rows}
        for g in groups
        if g.key["strategy"] == "none"
    }
    seeds = sorted({r["seed"] for r in ok})
    lines = [
        f"# {title}",
        "",
        f"{len(ok)} runs ({len(failed)} failed), seeds {seeds}. Test accuracy in % as mean ± std "
        "over seeds (std with ddof=1); total ε includes tuning (public tuning costs none; "
        "private tuning is Papernot & Steinke's bound); Δ dense = seed-paired difference to the "
        "dense (strategy none) run of the same setting, tuning, public set and ε, in points; "
        "upload = float32 values of the selected coordinates summed over clients and rounds.",
        "",
    ]
    header = [
        *keys,
        "test acc",
        "public-only acc",
        "Δ dense",
        "total ε",
        "trained coords",
        "upload MB",
        "time s",
        "n",
    ]
    body = [
        [
            *(_fmt(g.key[k]) for k in keys),
            _pct(g),
            _pct(g, "public_only_test_accuracy"),
            _dense_delta(g, dense, context),
            "-" if not g.values("total_epsilon") else f"{g.mean('total_epsilon'):.2f}",
            f"{g.mean('trained_coordinates'):.0f}",
            "-" if not g.values("upload_bytes") else f"{g.mean('upload_bytes') / 1e6:.2f}",
            f"{g.mean('wall_s'):.0f}",
            str(len(g.rows)),
        ]
        for g in groups
    ]
    lines += _table(header, body)
    tuned = [r for r in ok if r.get("tuned")]
    if tuned:
        lines += ["", "Tuned values per run (cell: chosen):", ""]
        lines += [f"- {r['cell']} (seed {r['seed']}): {r['tuned']}" for r in tuned]
    if failed:
        lines += ["", "Failed cells (tried again by the next run of the same command):", ""]
        lines += [f"- {r['cell']}: {r['error']}" for r in failed]
    lines += ["", *(f"![{name}]({name})" for name in PLOTS)]
    text = "\n".join(lines) + "\n"
    path = out / "report.md"
    atomic_write(path, lambda f: f.write(text.encode()))
    write_plots(groups, out)
    return path


def write_plots(groups: list[Group], out: Path) -> None:
    """The five plots of :data:`PLOTS` (empty panels say so)."""
    in_dist = [g for g in groups if g.key["public_kind"] == "in-distribution"]
    _panels(
        in_dist,
        out / PLOTS[0],
        panel=("setting", "tuning", "target_epsilon"),
        series=("strategy", "mode"),
        x=lambda g: g.key["density"],
        xlabel="density (fraction of coordinates trained)",
        xlog=True,
    )
    _panels(
        in_dist,
        out / PLOTS[1],
        panel=("setting", "tuning"),
        series=("strategy", "mode", "density"),
        x=lambda g: g.key["target_epsilon"],
        xlabel="ε (target, δ as configured)",
    )
    _panels(
        groups,
        out / PLOTS[2],
        panel=("setting", "tuning", "target_epsilon"),
        series=("strategy", "mode", "density"),
        x=lambda g: g.key["public_kind"],
        xlabel="public set",
        categorical=True,
    )
    _panels(
        [g for g in groups if g.values("upload_bytes")],
        out / PLOTS[3],
        panel=("setting", "target_epsilon"),
        series=("strategy", "mode", "tuning"),
        x=lambda g: g.mean("upload_bytes") / 1e6,
        xlabel="upload per run (MB, all clients and rounds)",
        xlog=True,
    )
    _panels(
        in_dist,
        out / PLOTS[4],
        panel=("setting",),
        series=("tuning", "strategy", "mode", "density"),
        x=lambda g: g.mean("total_epsilon"),
        xlabel="total ε including tuning",
    )


def _panels(
    groups: list[Group],
    path: Path,
    *,
    panel: Sequence[str],
    series: Sequence[str],
    x: Callable[[Group], Any],
    xlabel: str,
    xlog: bool = False,
    categorical: bool = False,
) -> None:
    """One panel per ``panel`` value, one line per ``series`` value: mean ± std test accuracy."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels: dict[tuple[Any, ...], list[Group]] = {}
    for g in groups:
        panels.setdefault(tuple(g.key[k] for k in panel), []).append(g)
    n = max(1, len(panels))
    cols = min(3, n)
    rows_n = math.ceil(n / cols)
    fig, axes = plt.subplots(
        rows_n, cols, figsize=(5.2 * cols, 4.0 * rows_n), squeeze=False, sharey=True
    )
    flat_axes = [a for row in axes for a in row]
    for ax in flat_axes[len(panels) :]:
        ax.set_visible(False)
    if not panels:
        flat_axes[0].set_visible(True)
        flat_axes[0].text(0.5, 0.5, "no runs for this plot", ha="center", va="center")
    for ax, (pkey, members) in zip(flat_axes, panels.items(), strict=False):
        order = list(dict.fromkeys(x(g) for g in members)) if categorical else None
        by_series: dict[tuple[Any, ...], list[Group]] = {}
        for g in members:
            by_series.setdefault(tuple(g.key[k] for k in series), []).append(g)
        for skey, line in by_series.items():
            pts = [(x(g), g) for g in line if x(g) is not None and not _isnan(x(g))]
            if not pts:
                continue
            if categorical:
                assert order is not None
                pts.sort(key=lambda p: order.index(p[0]))
                xs: list[Any] = [order.index(p[0]) for p in pts]
            else:
                pts.sort(key=lambda p: p[0])
                xs = [p[0] for p in pts]
            ax.errorbar(
                xs,
                [100 * p[1].mean("test_accuracy") for p in pts],
                yerr=[100 * p[1].std("test_accuracy") for p in pts],
                marker="o",
                capsize=3,
                linestyle="--" if skey and skey[0] == "none" else "-",
                label=", ".join(_fmt(v) for v in skey),
            )
        if categorical and order:
            ax.set_xticks(range(len(order)), [str(o) for o in order], fontsize="small")
        if xlog:
            ax.set_xscale("log")
        ax.set_title(
            ", ".join(f"{k}={_fmt(v)}" for k, v in zip(panel, pkey, strict=True)), fontsize="small"
        )
        ax.set_xlabel(xlabel)
        ax.grid(alpha=0.3)
        ax.legend(fontsize="x-small", title=", ".join(series), title_fontsize="x-small")
    for row in axes:
        row[0].set_ylabel("test accuracy (%, mean ± std over seeds)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _isnan(value: Any) -> bool:
    return isinstance(value, float) and math.isnan(value)
