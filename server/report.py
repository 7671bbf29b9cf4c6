"""Plain-text table of a federated run's summary, printed at the end of a run."""

from __future__ import annotations

from typing import Any

__all__ = ["format_table"]


def format_table(summary: dict[str, Any]) -> str:
    """Per-round accuracy and per-client privacy spend as an aligned text table."""
    lines = [
        f"public-only (warm start) test accuracy: {summary['public_only_test_accuracy']:.4f}",
        f"final test accuracy: {summary['test_accuracy']:.4f}  "
        f"(trained {summary['trained_coordinates']}/{summary['total_coordinates']} coordinates, "
        f"secure aggregation {'on' if summary['secure_aggregation'] else 'off'})",
        "",
        f"{'round':>5} {'accuracy':>9} {'trained':>8} {'refused':>8}",
    ]
    for r in summary["rounds"]:
        acc = r.get("test_accuracy")
        lines.append(
            f"{r['round']:>5} {'-' if acc is None else f'{acc:.4f}':>9} "
            f"{r.get('clients_trained', 0):>8} {len(r.get('clients_refused', [])):>8}"
            + (f"  ({r['skipped']})" if "skipped" in r else "")
        )
    lines += [
        "",
        f"{'client':>6} {'examples':>8} {'sigma':>7} {'q':>7} {'steps':>6} {'epsilon':>8}",
    ]
    for cid, c in summary["clients"].items():
        lines.append(
            f"{cid:>6} {c.get('num_examples', 0):>8} {_num(c.get('noise_multiplier')):>7} "
            f"{_num(c.get('sample_rate')):>7} {c.get('steps', '-'):>6} {_num(c.get('epsilon')):>8}"
        )
    return "\n".join(lines)


def _num(value: Any) -> str:
    return "-" if value is None else f"{float(value):.4g}"
