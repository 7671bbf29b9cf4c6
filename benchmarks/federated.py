"""``python -m benchmarks --federated``: round wall time of real ``fedprune run`` simulations.

Each case is one ``fedprune run`` (Flower's simulation engine on Ray, digits, the default
model and mask) in its own process, so every run pays its own Ray start and actor start like a
user's. Per round the server's summary gives the round's wall time (between the ends of two
consecutive rounds: configure, every client's fit, aggregation, evaluation and checkpoint) and
each client's own reported times (``train-s``: local training; ``fit-s``: its whole round).
Round 1 is left out of the medians: it also pays Ray's actor start and each actor's one-off
noise calibration.

Two overhead ratios are reported, because on this machine Ray runs only ``SLOTS`` clients at a
time (one CPU each, of two):

* ``x slowest``: round wall time / the slowest client's training time (the issue's definition;
  it can only reach 1 when every client trains at once);
* ``x bound``: round wall time / ``max(slowest fit, sum of fits / SLOTS)``, the shortest the
  round could take with ``SLOTS`` clients at a time and no framework cost at all.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from fedprune.summary import RunSummary

SLOTS = 2
"""Concurrent clients in ``fedprune run``'s local Ray (2 CPUs, 1 per client)."""

Row = dict[str, Any]


def run_case(
    *, clients: int, secagg: bool, rounds: int, workdir: Path, extra: list[str] | None = None
) -> Row:
    """One ``fedprune run`` with ``clients`` clients for ``rounds`` rounds; its figures."""
    out, ledgers = workdir / "run", workdir / "ledgers"
    cmd = [
        sys.executable,
        "-m",
        "fedprune.cli",
        "run",
        "--clients",
        str(clients),
        "--rounds",
        str(rounds),
        "--secagg" if secagg else "--no-secagg",
        "--out",
        str(out),
        "--ledger-dir",
        str(ledgers),
        "--quiet",
        *(extra or []),
    ]
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    started = time.perf_counter()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    process_s = time.perf_counter() - started
    if done.returncode != 0:
        tail = "\n".join(done.stderr.splitlines()[-15:])
        raise RuntimeError(f"fedprune run failed ({done.returncode}): {' '.join(cmd)}\n{tail}")
    row = round_figures(RunSummary.read(out))
    row |= {"clients": clients, "secagg": secagg, "rounds": rounds, "process_s": process_s}
    return row


def round_figures(summary: RunSummary) -> Row:
    """Per-round wall, slowest-client and bound times of a finished run, and their medians over
    rounds 2 and later (round 1 when there is no other)."""
    per_round = []
    previous = 0.0
    for r in summary.rounds:
        wall, previous = r.elapsed_s - previous, r.elapsed_s
        train, fit = list(r.client_train_s.values()), list(r.client_fit_s.values())
        if not train or not fit:
            continue
        bound = max(max(fit), sum(fit) / SLOTS)
        per_round.append(
            {
                "round": r.round,
                "wall_s": wall,
                "slowest_train_s": max(train),
                "slowest_fit_s": max(fit),
                "sum_fit_s": sum(fit),
                "bound_s": bound,
                "clients_trained": r.clients_trained,
            }
        )
    later = [p for p in per_round if p["round"] > 1] or per_round
    if not later:
        raise RuntimeError("no round reported client times (did every client refuse?)")

    def median(key: str) -> float:
        return statistics.median(p[key] for p in later)

    wall = median("wall_s")
    return {
        "per_round": per_round,
        "wall_s": wall,
        "slowest_train_s": median("slowest_train_s"),
        "slowest_fit_s": median("slowest_fit_s"),
        "sum_fit_s": median("sum_fit_s"),
        "bound_s": median("bound_s"),
        "x_slowest": wall / median("slowest_train_s"),
        "x_bound": wall / median("bound_s"),
    }


def measure(
    *, clients: list[int], rounds: int, repeats: int, extra: list[str] | None = None
) -> list[Row]:
    """Plain and SecAgg+ runs for every client count, interleaved (the order of the two flips
    every repeat, so that a slow spell of the shared machine does not favour one)."""
    rows = []
    for repeat in range(repeats):
        for n in clients:
            order = [False, True] if repeat % 2 == 0 else [True, False]
            for secagg in order:
                with tempfile.TemporaryDirectory(prefix="fedprune-bench-") as tmp:
                    row = run_case(
                        clients=n, secagg=secagg, rounds=rounds, workdir=Path(tmp), extra=extra
                    )
                row["repeat"] = repeat
                row["load_avg"] = os.getloadavg()[0]
                print(_line(row), flush=True)
                rows.append(row)
    return rows


def _line(row: Row) -> str:
    mode = "secagg+" if row["secagg"] else "plain"
    return (
        f"  {row['clients']:>3} clients {mode:<8} repeat {row['repeat']}: round "
        f"{row['wall_s']:.2f} s, slowest train {row['slowest_train_s']:.2f} s "
        f"(x{row['x_slowest']:.2f}), bound {row['bound_s']:.2f} s (x{row['x_bound']:.2f}), "
        f"load {row['load_avg']:.1f}"
    )


def table(rows: list[Row]) -> str:
    """Per client count: medians over repeats of plain and SecAgg+ round time and the ratios."""
    lines = [
        f"{'clients':>7} {'plain s':>8} {'secagg s':>9} {'secagg/plain':>13} "
        f"{'plain x slowest':>16} {'plain x bound':>14} {'secagg x bound':>15}"
    ]
    for n in dict.fromkeys(r["clients"] for r in rows):
        plain = [r for r in rows if r["clients"] == n and not r["secagg"]]
        secure = [r for r in rows if r["clients"] == n and r["secagg"]]

        def med(group: list[Row], key: str) -> float:
            return statistics.median(r[key] for r in group)

        lines.append(
            f"{n:>7} {med(plain, 'wall_s'):>8.2f} {med(secure, 'wall_s'):>9.2f} "
            f"{med(secure, 'wall_s') / med(plain, 'wall_s'):>13.2f} "
            f"{med(plain, 'x_slowest'):>16.2f} {med(plain, 'x_bound'):>14.2f} "
            f"{med(secure, 'x_bound'):>15.2f}"
        )
    return "\n".join(lines)
