"""The ``fedprune`` command line: ``train``, ``run`` (federated) and ``activation-privacy``.

Every flag maps onto one flat config key of :class:`fedprune.config.RunConfig`; only flags given
on the command line override the defaults (``RunConfig``'s for ``train``, the Flower app's
``[tool.flwr.app.config]`` for ``run``). ``run`` imports the Flower app lazily, so the core
library never imports ``flwr``.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from fedprune import __version__
from fedprune.activation.cli import add_activation_privacy_parser
from fedprune.config import RunConfig
from fedprune.masks import available_mask_strategies
from fedprune.models import available_models
from fedprune.privacy import PrivacyBudgetExceededError

__all__ = ["build_parser", "main"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Flag:
    """One command-line flag and the flat config key it sets."""

    flag: str
    key: str
    type: Callable[[str], Any]
    help: str
    choices: Sequence[str] | None = None


def _csv_ints(text: str) -> str:
    try:
        [int(c) for c in text.split(",") if c.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated ints, got {text!r}") from None
    return text


def _epsilon(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected epsilon > 0, got {text}")
    return value


_COMMON = [
    _Flag("--seed", "seed", int, "seed for every source of randomness"),
    _Flag("--out", "out-dir", str, "output directory (summary.json and friends)"),
    _Flag("--model", "model", str, f"model: auto, {', '.join(available_models())}"),
    _Flag("--dataset", "data.dataset", str, "digits (offline), mnist, fashion-mnist, cifar10, ..."),
    _Flag("--data-dir", "data.data-dir", str, "root of torchvision dataset files"),
    _Flag("--public-fraction", "data.public-fraction", float, "share of train data made public"),
    _Flag(
        "--public-kind",
        "data.public-kind",
        str,
        "relation of public to private data",
        ("in-distribution", "class-subset", "transformed", "other-dataset"),
    ),
    _Flag("--public-classes", "data.public-classes", _csv_ints, "classes of a class-subset"),
    _Flag("--other-dataset", "data.other-dataset", str, "public dataset for other-dataset"),
    _Flag("--public-warmup-epochs", "warmup.epochs", int, "non-private epochs on public data"),
    _Flag("--warmup-lr", "warmup.lr", float, "learning rate of the public warm start"),
    _Flag("--mode", "mask.mode", str, "freeze: pick once; select: re-pick", ("freeze", "select")),
    _Flag(
        "--strategy",
        "mask.strategy",
        str,
        f"mask strategy: {', '.join(available_mask_strategies())}",
    ),
    _Flag("--density", "mask.density", float, "fraction of coordinates trained, in (0, 1]"),
    _Flag(
        "--scope", "mask.scope", str, "density budget per model or per tensor", ("global", "layer")
    ),
    _Flag(
        "--bias-policy",
        "mask.bias-policy",
        str,
        "1-D tensors (biases, norms)",
        ("masked", "always", "never"),
    ),
    _Flag("--select-every", "mask.select-every", int, "select mode: re-pick every N steps/rounds"),
    _Flag("--epsilon", "privacy.target-epsilon", _epsilon, "target epsilon (noise is calibrated)"),
    _Flag("--noise-multiplier", "privacy.noise-multiplier", float, "fixed sigma (overrides eps)"),
    _Flag("--delta", "privacy.delta", float, "target delta"),
    _Flag("--max-grad-norm", "privacy.max-grad-norm", float, "per-example clipping norm C"),
    _Flag("--accountant", "privacy.accountant", str, "privacy accountant", ("rdp", "prv")),
    _Flag("--max-epsilon", "privacy.max-epsilon", float, "hard budget: refuse to train past it"),
    _Flag("--batch-size", "optim.batch-size", int, "expected (Poisson) batch size"),
    _Flag("--lr", "optim.lr", float, "(DP-)SGD learning rate"),
    _Flag("--momentum", "optim.momentum", float, "SGD momentum (never moves unselected coords)"),
]
_TRAIN = [_Flag("--epochs", "optim.epochs", int, "epochs over the private data")]
_RUN = [
    _Flag("--clients", "federated.num-clients", int, "number of simulated clients"),
    _Flag("--rounds", "federated.num-rounds", int, "federated rounds"),
    _Flag("--local-epochs", "federated.local-epochs", int, "local DP-SGD epochs per round"),
    _Flag("--server-lr", "federated.server-lr", float, "server step size on the mean update"),
    _Flag("--partition", "data.partition", str, "client partition", ("iid", "dirichlet", "shards")),
    _Flag("--dirichlet-alpha", "data.dirichlet-alpha", float, "Dirichlet label-skew alpha"),
    _Flag("--ledger-dir", "privacy.ledger-dir", str, "keep client privacy ledgers on disk here"),
]


def _add_flags(parser: argparse.ArgumentParser, flags: Sequence[_Flag]) -> None:
    for f in flags:
        parser.add_argument(
            f.flag,
            dest=f.key,
            type=f.type,
            choices=f.choices,
            default=argparse.SUPPRESS,
            metavar=None if f.choices else f.flag[2:].upper().replace("-", "_"),
            help=f"{f.help} [{f.key}]",
        )


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The flat config keys set on the command line (``dest`` is the key)."""
    return {k: v for k, v in vars(args).items() if "." in k or k in {"seed", "out-dir", "model"}}


def _train(args: argparse.Namespace) -> int:
    from fedprune.training.centralised import run_centralised

    overrides = _overrides(args)
    if args.non_private:
        overrides["privacy.enabled"] = False
    config = RunConfig(out_dir="runs/train").replace(**overrides)
    summary = run_centralised(config, progress=not args.quiet)
    eps = summary["epsilon"]
    eps_text = "non-private" if eps is None else f"epsilon={eps:.3f} (delta={summary['delta']:g})"
    print(
        f"test accuracy {summary['test_accuracy']:.4f} | {eps_text} | trained "
        f"{summary['trained_coordinates']}/{summary['total_coordinates']} coordinates | "
        f"public-only {summary['public_only_test_accuracy']:.4f}"
    )
    if config.out_dir:
        print(f"summary: {config.out_dir}/summary.json")
    return 0


def _run(args: argparse.Namespace) -> int:
    from server.simulation import run_federated

    overrides = _overrides(args)
    if args.secagg is not None:
        overrides["secagg.enabled"] = args.secagg
    if args.non_private:
        overrides["privacy.enabled"] = False
    if args.resume:
        overrides["federated.resume"] = True
    run_federated(overrides, progress=not args.quiet)
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The ``fedprune`` argument parser (subcommands ``train``, ``run``, ``activation-privacy``)."""
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
    _add_flags(train, _COMMON + _TRAIN)
    train.add_argument("--non-private", action="store_true", help="plain SGD, no DP (baseline)")
    train.add_argument("--quiet", action="store_true", help="no progress bars")
    train.set_defaults(func=_train)

    run = sub.add_parser(
        "run",
        help="federated run in Flower's simulation engine (Ray)",
        description="The Flower app (server/ + clients/) in simulation: the server picks masks "
        "from public data, clients run masked DP-SGD, updates meet in SecAgg+. Defaults come "
        "from [tool.flwr.app.config] in pyproject.toml. Writes OUT/summary.json.",
    )
    _add_flags(run, _COMMON + _RUN)
    run.add_argument(
        "--secagg",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="Flower SecAgg+ secure aggregation [secagg.enabled]",
    )
    run.add_argument("--non-private", action="store_true", help="plain SGD on clients, no DP")
    run.add_argument(
        "--resume",
        action="store_true",
        help="continue from OUT/checkpoint.pt (needs --ledger-dir) [federated.resume]",
    )
    run.add_argument("--quiet", action="store_true", help="no progress display")
    run.set_defaults(func=_run)

    add_activation_privacy_parser(sub)
    return parser


def _configure_logging(*, verbose: bool) -> None:
    """Log fedprune's own records (and the apps') to stderr.

    A handler on our package loggers rather than ``basicConfig``: Opacus configures the root
    logger on import, which would turn ``basicConfig`` into a no-op.
    """
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    for name in ("fedprune", "server", "clients"):
        package_logger = logging.getLogger(name)
        package_logger.handlers[:] = [handler]
        package_logger.setLevel(logging.DEBUG if verbose else logging.INFO)
        package_logger.propagate = False


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``fedprune`` console script; returns the exit code.

    Configuration and data errors print one clear line (``fedprune: error: ...``) and exit 2.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    _configure_logging(verbose=args.verbose)
    try:
        code: int = args.func(args)
    except (ValueError, FileNotFoundError, PrivacyBudgetExceededError) as err:
        parser.exit(2, f"fedprune: error: {err}\n")
    return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
