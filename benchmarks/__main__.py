"""``python -m benchmarks``: masked DP-SGD step time and peak memory vs density."""

from __future__ import annotations

import argparse
import json
import logging
import platform
import sys
import time
from pathlib import Path

import torch

from benchmarks import layers, steps
from benchmarks.memory import pin_mmap_threshold

METHODS = ["sgd", "opacus", "ghost", "reference", "fast"]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description=(
            "Time per DP-SGD step and peak working memory vs mask density, for non-private SGD, "
            "stock Opacus hooks, Opacus ghost clipping, fedprune's reference engine and its fast "
            "engine, side by side in one run (ratios to non-private SGD)."
        ),
    )
    p.add_argument("--quick", action="store_true", help="1 round of 2 steps per case (smoke run)")
    p.add_argument("--models", nargs="+", default=list(steps.INPUT_SHAPES), help="default: all")
    p.add_argument("--densities", nargs="+", type=float, default=[1.0, 0.5, 0.1, 0.01])
    p.add_argument("--modes", nargs="+", default=["freeze", "select"], choices=["freeze", "select"])
    p.add_argument("--methods", nargs="+", default=METHODS, choices=METHODS)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--rounds", type=int, default=5, help="interleaved timing rounds (median)")
    p.add_argument("--steps", type=int, default=3, help="steps per case per round")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    p.add_argument("--out", type=Path, help="write the rows as JSON here")
    p.add_argument(
        "--fashion",
        type=float,
        metavar="EPOCHS",
        help="instead: the headline Fashion-MNIST CNN run (eps=3, batch 64) for EPOCHS epochs",
    )
    p.add_argument("--data-dir", default="data", help="for --fashion")
    p.add_argument(
        "--upload",
        action="store_true",
        help="instead: bytes one federated client uploads per round vs density, plain and "
        "SecAgg+ (from Flower's message encoding; no training)",
    )
    p.add_argument(
        "--federated",
        action="store_true",
        help="instead: round wall time of real `fedprune run` simulations (digits), plain vs "
        "SecAgg+, against the slowest client's own training time",
    )
    p.add_argument(
        "--clients",
        nargs="+",
        type=int,
        default=[10],
        help="for --federated: client counts (default 10)",
    )
    p.add_argument(
        "--fed-rounds", type=int, default=4, help="for --federated: rounds per run (default 4)"
    )
    p.add_argument(
        "--repeats", type=int, default=2, help="for --federated: runs per case (default 2)"
    )
    p.add_argument(
        "--layers",
        action="store_true",
        help="instead: per layer, measured vs modelled time of the fast engine's gather and "
        "materialise strategies (checks the cost model on this machine)",
    )
    return p


def _table(rows: list[dict[str, object]]) -> str:
    lines = []
    for model in dict.fromkeys(str(r["model"]) for r in rows):
        mine = [r for r in rows if r["model"] == model]
        base = next(r for r in mine if r["method"] == "sgd")
        t0, m0 = float(base["step_ms"]), max(float(base["peak_mib"]), 1e-9)  # type: ignore[arg-type]
        lines.append(f"\n{model}: non-private SGD {t0:.1f} ms/step, {m0:.1f} MiB peak")
        lines.append(
            f"  {'method':<10}{'mode':<8}{'density':>8}{'ms/step':>10}{'x sgd':>8}"
            f"{'MiB':>9}{'x sgd':>8}"
        )
        for r in mine:
            t, m = float(r["step_ms"]), float(r["peak_mib"])  # type: ignore[arg-type]
            lines.append(
                f"  {r['method']!s:<10}{r['mode']!s:<8}{float(r['density']):>8.0%}"  # type: ignore[arg-type]
                f"{t:>10.1f}{t / t0:>8.2f}{m:>9.1f}{m / m0:>8.2f}"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(args.threads)
    pinned = pin_mmap_threshold()
    meta = {
        "command": "python -m benchmarks " + " ".join(argv if argv is not None else sys.argv[1:]),
        "torch": torch.__version__,
        "threads": args.threads,
        "machine": platform.machine(),
        "processor": platform.processor(),
        "mmap_threshold_pinned": pinned,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    if args.fashion is not None:
        from benchmarks import fashion

        rows = fashion.run(epochs=args.fashion, data_dir=args.data_dir, batch=args.batch)
        for r in rows:
            print(
                f"{r['mode']:<7}{float(r['density']):>5.0%} {r['engine']:<10}"  # type: ignore[arg-type]
                f"{float(r['wall_s']):>8.1f} s  acc {float(r['test_accuracy']):.3f}"  # type: ignore[arg-type]
                f"  eps {float(r['epsilon']):.2f}"  # type: ignore[arg-type]
            )
    elif args.federated:
        from benchmarks import federated

        rows = federated.measure(clients=args.clients, rounds=args.fed_rounds, repeats=args.repeats)
        print(federated.table(rows), flush=True)
    elif args.upload:
        from benchmarks import upload

        rows = []
        for model in args.models:
            rows.extend(upload.measure(model, steps.INPUT_SHAPES[model], args.densities))
        print(upload.table(rows), flush=True)
    elif args.layers:
        rows = []
        for model in args.models:
            got = layers.measure(
                model,
                steps.INPUT_SHAPES[model],
                densities=[d for d in args.densities if d < 1.0],
                batch=args.batch,
                repeats=args.rounds,
            )
            print(f"\n{model}: ms per call at batch {args.batch}", flush=True)
            print(layers.table(got), flush=True)
            rows.extend(got)
    else:
        if args.quick:
            args.rounds, args.steps = 1, 2
        rows = []
        for model in args.models:
            got = steps.measure(
                model,
                densities=args.densities,
                modes=args.modes,
                batch=args.batch,
                rounds=args.rounds,
                steps=args.steps,
                methods=args.methods,
            )
            print(_table(got), flush=True)
            rows.extend(got)
    if args.out is not None:
        args.out.write_text(json.dumps({"meta": meta, "rows": rows}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
