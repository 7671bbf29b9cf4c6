"""The one command-line flag table of every ``fedprune`` subcommand.

Each :class:`Flag` maps one option onto one flat config key; :func:`add_flags` adds a list of
them to a parser (suppressing defaults, so only flags given on the command line override the
config), :func:`overrides` reads them back, and :func:`add_output_flags` adds the options every
command shares (``--out``, ``--quiet``).
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from fedprune.data import available_datasets, available_features
from fedprune.masks import available_mask_strategies
from fedprune.models import available_models

__all__ = [
    "ACTIVATION_FLAGS",
    "COMMON_FLAGS",
    "FEDERATED_FLAGS",
    "TRAIN_FLAGS",
    "Flag",
    "add_flags",
    "add_output_flags",
    "overrides",
]


@dataclass(frozen=True)
class Flag:
    """One command-line flag and the flat config key (``dest``) it sets."""

    flag: str
    key: str
    type: Callable[[str], Any]
    help: str
    choices: Sequence[str] | None = None
    nargs: str | None = None
    """argparse ``nargs`` (``"+"``: one or more values, read back as a list)."""

    def rebind(self, key: str, help: str | None = None) -> Flag:
        """The same option setting another command's config ``key`` (one spelling everywhere)."""
        return dataclasses.replace(self, key=key, help=self.help if help is None else help)


def _csv_ints(text: str) -> str:
    try:
        [int(c) for c in text.split(",") if c.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated ints, got {text!r}") from None
    return text


def _positive(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a value > 0, got {text}")
    return value


COMMON_FLAGS = [
    Flag("--seed", "seed", int, "seed of splits, initialisation, warm start and masks"),
    Flag("--model", "model", str, f"model: auto, {', '.join(available_models())}"),
    Flag("--dataset", "data.dataset", str, f"dataset: {', '.join(available_datasets())}"),
    Flag("--data-dir", "data.data-dir", str, "root of torchvision dataset files"),
    Flag("--public-fraction", "data.public-fraction", float, "share of train data made public"),
    Flag(
        "--public-kind",
        "data.public-kind",
        str,
        "relation of public to private data",
        ("in-distribution", "class-subset", "transformed", "other-dataset"),
    ),
    Flag("--public-classes", "data.public-classes", _csv_ints, "classes of a class-subset"),
    Flag("--other-dataset", "data.other-dataset", str, "public dataset for other-dataset"),
    Flag(
        "--features",
        "data.features",
        str,
        "fixed feature map: pixels, or scattering (ScatterNet; pair with --model linear)",
        tuple(available_features()),
    ),
    Flag(
        "--private-records",
        "data.private-records",
        int,
        "keep a fixed subset of this many private records (0: all)",
    ),
    Flag("--public-warmup-epochs", "warmup.epochs", int, "non-private epochs on public data"),
    Flag("--warmup-lr", "warmup.lr", float, "learning rate of the public warm start"),
    Flag("--mode", "mask.mode", str, "freeze: pick once; select: re-pick", ("freeze", "select")),
    Flag(
        "--strategy",
        "mask.strategy",
        str,
        f"mask strategy: {', '.join(available_mask_strategies())}",
    ),
    Flag("--density", "mask.density", float, "fraction of coordinates trained, in (0, 1]"),
    Flag(
        "--scope", "mask.scope", str, "density budget per model or per tensor", ("global", "layer")
    ),
    Flag(
        "--bias-policy",
        "mask.bias-policy",
        str,
        "1-D tensors (biases, norms)",
        ("masked", "always", "never"),
    ),
    Flag("--select-every", "mask.select-every", int, "select mode: re-pick every N epochs"),
    Flag("--epsilon", "privacy.target-epsilon", _positive, "target epsilon (noise is calibrated)"),
    Flag("--noise-multiplier", "privacy.noise-multiplier", float, "fixed sigma (overrides eps)"),
    Flag("--delta", "privacy.delta", float, "target delta"),
    Flag("--max-grad-norm", "privacy.max-grad-norm", float, "per-example clipping norm C"),
    Flag("--accountant", "privacy.accountant", str, "privacy accountant", ("rdp", "prv")),
    Flag("--max-epsilon", "privacy.max-epsilon", _positive, "budget: refuse to train past it"),
    Flag("--batch-size", "optim.batch-size", int, "expected (Poisson) batch size"),
    Flag("--lr", "optim.lr", float, "(DP-)SGD learning rate"),
    Flag("--momentum", "optim.momentum", float, "SGD momentum (never moves unselected coords)"),
]
TRAIN_FLAGS = [Flag("--epochs", "optim.epochs", int, "epochs over the private data")]
FEDERATED_FLAGS = [
    Flag("--clients", "federated.num-clients", int, "number of simulated clients"),
    Flag("--rounds", "federated.num-rounds", int, "federated rounds"),
    Flag("--local-epochs", "federated.local-epochs", int, "local DP-SGD epochs per round"),
    Flag("--server-lr", "federated.server-lr", float, "server step size on the mean update"),
    Flag("--partition", "data.partition", str, "client partition", ("iid", "dirichlet", "shards")),
    Flag("--dirichlet-alpha", "data.dirichlet-alpha", float, "Dirichlet label-skew alpha"),
]


def _flag(spelling: str) -> Flag:
    return next(f for f in COMMON_FLAGS + TRAIN_FLAGS if f.flag == spelling)


ACTIVATION_FLAGS = [
    _flag("--dataset").rebind("dataset"),
    _flag("--data-dir").rebind("data_dir"),
    _flag("--model").rebind("model"),
    Flag(
        "--layer",
        "layer",
        str,
        "nn.Linear/nn.Conv2d module to prune and attack, by its name in model.named_modules() "
        "(default: the first, e.g. '1' for mlp, 'features.0' for cnn)",
    ),
    Flag("--keep", "keep_fractions", float, "keep-fractions k in (0, 1)", nargs="+"),
    _flag("--public-fraction").rebind("public_fraction"),
    _flag("--epochs").rebind("epochs", "classifier epochs on public data"),
    _flag("--lr").rebind("lr", "classifier SGD learning rate"),
    Flag("--inverter-epochs", "inverter_epochs", int, "decoder epochs per attacked setting"),
    Flag("--noise-repeats", "noise_repeats", int, "noise draws per accuracy evaluation"),
    _flag("--delta").rebind("delta", "delta of the Gaussian mechanism"),
    _flag("--seed").rebind("seed", "seed of the split, classifier, decoders and noise"),
]
"""``activation-privacy``: keys are :class:`~fedprune.activation.study.ActivationPrivacyConfig`
fields; options it shares with ``train`` keep their spelling and help."""


def add_flags(
    parser: argparse.ArgumentParser,
    flags: Sequence[Flag],
    *,
    defaults: Mapping[str, Any] | None = None,
) -> None:
    """Add ``flags`` to ``parser``; each sets ``args.<key>`` only when given.

    ``defaults`` (flat key -> value, e.g. ``RunConfig().to_flat()``) are shown in ``--help``
    only: a flag left out sets nothing, so the command's own default table applies.
    """
    for f in flags:
        shown = "" if defaults is None or f.key not in defaults else _shown(defaults[f.key])
        parser.add_argument(
            f.flag,
            dest=f.key,
            type=f.type,
            choices=f.choices,
            nargs=f.nargs,
            default=argparse.SUPPRESS,
            metavar=None if f.choices else f.flag[2:].upper().replace("-", "_"),
            help=f"{f.help} [{f.key}{shown}]",
        )


def _shown(value: Any) -> str:
    if isinstance(value, list | tuple):
        value = " ".join(str(v) for v in value)
    if value is None or value == "":
        return ""
    return f" = {value}".replace("%", "%%")


def add_output_flags(parser: argparse.ArgumentParser, *, key: str = "out-dir") -> None:
    """``--out`` (sets ``key``) and ``--quiet`` (no progress bars), shared by every command."""
    parser.add_argument(
        "--out",
        dest=key,
        default=argparse.SUPPRESS,
        metavar="DIR",
        help=f"output directory (summary.json and friends) [{key}]",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def overrides(args: argparse.Namespace, flags: Sequence[Flag]) -> dict[str, Any]:
    """The flat config keys of ``flags`` (and ``out-dir``) given on the command line."""
    keys = {f.key for f in flags} | {"out-dir"}
    return {k: v for k, v in vars(args).items() if k in keys}
