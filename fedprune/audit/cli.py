"""The ``fedprune audit RUN_DIR`` subcommand (registered by the top-level CLI)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from fedprune.audit.plots import plot_roc
from fedprune.audit.report import AuditSettings, format_audit_table, run_audit
from fedprune.flags import add_output_flags

__all__ = ["ROC_FILE", "add_audit_parser", "run_audit_command"]

ROC_FILE = "audit_roc.png"
_DEFAULTS = AuditSettings()


def add_audit_parser(subparsers: Any) -> None:
    """Register ``audit`` on ``subparsers``; the namespace carries ``func=run_audit_command``."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "audit",
        help="empirical privacy audit of a trained run (membership inference, canaries)",
        description=(
            "Membership-inference attacks (loss threshold, LiRA with reference models) on the "
            "run's final model, and a canary audit (crafted records inserted at random into one "
            "retraining with the run's recipe). Reports AUC, TPR at low FPR and the empirical "
            "epsilon lower bound next to the accountant's epsilon. Writes OUT/audit.json and "
            f"OUT/{ROC_FILE} (OUT defaults to RUN_DIR)."
        ),
    )
    parser.add_argument("run_dir", metavar="RUN_DIR", help="output directory of a run")
    parser.add_argument(
        "--references",
        type=int,
        default=_DEFAULTS.references,
        help="LiRA reference models, even; 0 skips LiRA (%(default)s)",
    )
    parser.add_argument(
        "--canaries",
        type=int,
        default=_DEFAULTS.canaries,
        help="canaries, each inserted with probability 1/2; 0 skips (%(default)s)",
    )
    parser.add_argument("--seed", type=int, default=_DEFAULTS.seed, help="audit seed (%(default)s)")
    parser.add_argument(
        "--confidence",
        type=float,
        default=_DEFAULTS.confidence,
        help="confidence of the Clopper-Pearson bounds (%(default)s)",
    )
    add_output_flags(parser, key="out")
    parser.set_defaults(out=None, func=run_audit_command)


def run_audit_command(args: argparse.Namespace) -> int:
    """Run the audit from parsed arguments, write JSON and plot, print the table; 0 on success.

    Bad input raises ``ValueError``/``FileNotFoundError`` (one line, exit 2, from ``main``).
    """
    settings = AuditSettings(
        references=args.references,
        canaries=args.canaries,
        seed=args.seed,
        confidence=args.confidence,
    )
    report = run_audit(args.run_dir, settings, progress=not args.quiet)
    out = Path(args.out) if args.out else Path(args.run_dir)
    json_path = report.write(out)
    eps = report.accountant_epsilon
    title = f"{report.kind}, " + (f"accountant eps {eps:.3g}" if eps is not None else "non-private")
    png_path = plot_roc(report.attacks, title=title, path=out / ROC_FILE)
    print(format_audit_table(report))
    print(f"wrote {json_path}, {png_path}")
    return 0
