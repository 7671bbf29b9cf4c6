"""The ``fedprune`` command line: train, compare, audit, activation-privacy; more from plugins.

Every flag maps onto one flat config key (:mod:`fedprune.flags`); only flags given on the
command line override the one default table (:class:`fedprune.config.RunConfig`). Commands that
need Flower (``run``) are contributed by the Flower app through the ``fedprune.commands`` entry
point group, so this core module never imports ``server/``, ``clients/`` or ``flwr``.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path
from typing import Any

from fedprune import __version__
from fedprune.activation.cli import add_activation_privacy_parser
from fedprune.audit.cli import add_audit_parser
from fedprune.compare.cli import add_compare_parser
from fedprune.config import RunConfig
from fedprune.flags import COMMON_FLAGS, TRAIN_FLAGS, add_flags, add_output_flags, overrides
from fedprune.io import ensure_writable_dir
from fedprune.privacy import PrivacyBudgetExceededError
from fedprune.summary import format_table

__all__ = ["COMMAND_GROUP", "build_parser", "main"]

logger = logging.getLogger(__name__)

COMMAND_GROUP = "fedprune.commands"
"""Entry-point group of extra subcommands: each entry is ``register(subparsers) -> None``."""

_USER_ERRORS: tuple[type[BaseException], ...] = (
    ValueError,
    FileNotFoundError,
    PermissionError,
    PrivacyBudgetExceededError,
)


def _train(args: argparse.Namespace) -> int:
    from fedprune.privacy.ledger_store import LedgerStore
    from fedprune.training.centralised import run_centralised

    flat = overrides(args, COMMON_FLAGS + TRAIN_FLAGS)
    if args.non_private:
        flat["privacy.enabled"] = False
    config = RunConfig().replace(**flat)
    # Bad paths fail now, before any training, not when the results are written.
    if config.out_dir:
        ensure_writable_dir(config.out_dir, what="out-dir")
    if args.ledger_dir:
        ensure_writable_dir(args.ledger_dir, what="ledger-dir", mode=0o700)
    store = LedgerStore(Path(args.ledger_dir)) if args.ledger_dir else None
    summary = run_centralised(
        config,
        ledger_store=store,
        reproducible_noise=args.reproducible_noise,
        progress=not args.quiet,
    )
    print(format_table(summary))
    if config.out_dir:
        print(f"summary: {config.out_dir}/summary.json")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The ``fedprune`` parser: ``train``, ``activation-privacy``, ``audit`` and plugin commands."""
    parser = argparse.ArgumentParser(
        prog="fedprune",
        description="Federated DP-SGD that trains only a public-data-chosen subset of parameters.",
    )
    parser.add_argument("--version", action="version", version=f"fedprune {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    train = sub.add_parser(
        "train",
        help="centralised (masked) DP-SGD on one machine",
        description="Public warm start, mask from public data, then (masked) DP-SGD on the "
        "private data. Writes OUT/summary.json.",
    )
    add_flags(train, COMMON_FLAGS + TRAIN_FLAGS, defaults=RunConfig().to_flat())
    add_output_flags(train)
    train.add_argument("--non-private", action="store_true", help="plain SGD, no DP (baseline)")
    train.add_argument(
        "--ledger-dir",
        default="",
        help="keep this data holder's privacy ledger here (persists and composes across runs)",
    )
    train.add_argument(
        "--reproducible-noise",
        action="store_true",
        help="DP noise from the seed (debugging only: anyone with the config can remove it)",
    )
    train.set_defaults(func=_train)

    add_activation_privacy_parser(sub)
    add_compare_parser(sub)
    add_audit_parser(sub)
    for entry in _plugin_commands():
        try:
            register = entry.load()
        except ImportError as err:
            # A stale or broken plugin must not take every other command down with it.
            logger.warning(
                "command %r unavailable: cannot import %s (%s)", entry.name, entry.value, err
            )
            continue
        register(sub)
    return parser


def _plugin_commands() -> list[EntryPoint]:
    """The ``fedprune.commands`` entry points, one per name, sorted by name.

    Two installed copies (e.g. an editable install and a wheel under ``PYTHONPATH``, if their
    distribution names differ) would each contribute the same command, which argparse refuses
    ("conflicting subparser"); the first one on ``sys.path`` wins, as for imports.
    """
    first: dict[str, EntryPoint] = {}
    for entry in entry_points(group=COMMAND_GROUP):  # in sys.path order
        if entry.name in first:
            logger.debug(
                "ignoring %s: command %r comes from %s", entry, entry.name, first[entry.name]
            )
            continue
        first[entry.name] = entry
    return [first[name] for name in sorted(first)]


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is when a record is emitted (not when it was made),
    so a caller that swaps stderr (a test, a notebook) never leaves us a closed stream."""

    @property
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, value: Any) -> None:
        pass


def _configure_logging(*, verbose: bool) -> None:
    """Log fedprune's own records (and the apps') to stderr.

    A handler on our package loggers rather than ``basicConfig``: Opacus configures the root
    logger on import, which would turn ``basicConfig`` into a no-op.
    """
    handler = _StderrHandler()
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    for name in ("fedprune", "server", "clients"):
        package_logger = logging.getLogger(name)
        package_logger.handlers[:] = [handler]
        package_logger.setLevel(logging.DEBUG if verbose else logging.INFO)
        package_logger.propagate = False


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``fedprune`` console script; returns the exit code.

    User mistakes (bad config, missing data, unwritable paths, an exhausted budget) print one
    line (``fedprune: error: ...``) and exit 2, without a traceback.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    _configure_logging(verbose=args.verbose)
    try:
        code: int = args.func(args)
    except _USER_ERRORS as err:
        parser.exit(2, f"fedprune: error: {err}\n")
    return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
