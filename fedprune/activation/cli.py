"""The ``fedprune activation-privacy`` subcommand (registered by the top-level CLI)."""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Any

from fedprune.activation.study import (
    ActivationPrivacyConfig,
    run_activation_privacy,
    save_activation_privacy,
)
from fedprune.flags import add_output_flags

__all__ = ["add_activation_privacy_parser", "run_activation_privacy_command"]

logger = logging.getLogger(__name__)

_DEFAULTS = ActivationPrivacyConfig()
DEFAULT_OUT = "runs/activation-privacy"


def add_activation_privacy_parser(subparsers: Any) -> None:
    """Register ``activation-privacy`` on ``subparsers`` (from ``ArgumentParser.add_subparsers``).

    The parsed namespace carries ``func=run_activation_privacy_command``.
    """
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "activation-privacy",
        help="pruning vs explicit noise as protection of hidden activations against inversion",
        description=(
            "Prune one layer at several keep-fractions, measure and fit the activation "
            "perturbation (equivalent noise scale and epsilon, an analogy: pruning is "
            "deterministic), and attack pruned and noise-protected activations with a decoder "
            "trained on public data. This is activation privacy of inputs, not record-level DP "
            "of training data."
        ),
    )
    parser.add_argument("--dataset", default=_DEFAULTS.dataset, help="dataset name (%(default)s)")
    parser.add_argument("--data-dir", default=None, help="root of on-disk datasets")
    parser.add_argument("--model", default=_DEFAULTS.model, help="model name (%(default)s)")
    parser.add_argument(
        "--layer",
        default=None,
        help="nn.Linear/nn.Conv2d module to prune and attack, by its name in "
        "model.named_modules() (default: the first one, e.g. '1' for mlp, 'features.0' for cnn)",
    )
    parser.add_argument(
        "--keep",
        type=float,
        nargs="+",
        default=list(_DEFAULTS.keep_fractions),
        help="keep-fractions k in (0, 1) (%(default)s)",
    )
    parser.add_argument(
        "--public-fraction",
        type=float,
        default=_DEFAULTS.public_fraction,
        help="share of the train set that is public (%(default)s)",
    )
    parser.add_argument(
        "--epochs",
        type=int,
        default=_DEFAULTS.epochs,
        help="classifier epochs on public data (%(default)s)",
    )
    parser.add_argument(
        "--lr", type=float, default=_DEFAULTS.lr, help="classifier SGD learning rate (%(default)s)"
    )
    parser.add_argument(
        "--inverter-epochs",
        type=int,
        default=_DEFAULTS.inverter_epochs,
        help="decoder epochs per attacked setting (%(default)s)",
    )
    parser.add_argument(
        "--noise-repeats",
        type=int,
        default=_DEFAULTS.noise_repeats,
        help="noise draws per accuracy evaluation in calibration (%(default)s)",
    )
    parser.add_argument(
        "--delta",
        type=float,
        default=_DEFAULTS.delta,
        help="delta of the Gaussian mechanism (%(default)s)",
    )
    parser.add_argument("--seed", type=int, default=_DEFAULTS.seed, help="seed (%(default)s)")
    # The options every fedprune command shares: --out DIR (here default DEFAULT_OUT), --quiet.
    add_output_flags(parser, key="out")
    parser.set_defaults(out=DEFAULT_OUT, func=run_activation_privacy_command)


def run_activation_privacy_command(args: argparse.Namespace) -> int:
    """Run the study from parsed arguments and write its outputs; 0 on success, 2 on bad input."""
    try:
        config = ActivationPrivacyConfig(
            dataset=args.dataset,
            data_dir=args.data_dir,
            model=args.model,
            layer=args.layer,
            keep_fractions=tuple(args.keep),
            public_fraction=args.public_fraction,
            epochs=args.epochs,
            lr=args.lr,
            inverter_epochs=args.inverter_epochs,
            noise_repeats=args.noise_repeats,
            delta=args.delta,
            seed=args.seed,
        )
        result = run_activation_privacy(config, progress=not args.quiet)
    except ValueError as err:
        print(f"fedprune activation-privacy: error: {err}", file=sys.stderr)
        return 2
    paths = save_activation_privacy(result, args.out)
    print(f"unprotected layer {result.layer!r}: test accuracy {result.base_accuracy:.4f}")
    header = ("setting", "k", "scale", "acc", "MSE", "SSIM", "eps(whole)")
    print("{:<10} {:>6} {:>9} {:>7} {:>8} {:>6} {:>11}".format(*header))
    for s in result.settings:
        eps = "-" if s.epsilon_whole_input is None else f"{s.epsilon_whole_input:.4g}"
        print(
            f"{s.protection:<10} {s.keep_fraction:>6g} {s.scale:>9.4g} {s.test_accuracy:>7.4f} "
            f"{s.recon_mse:>8.5f} {s.recon_ssim:>6.3f} {eps:>11}"
        )
    print("pruning epsilons are an analogy (deterministic perturbation), not DP guarantees;")
    print("all of this is about activations of inputs, not record-level DP of training data.")
    print(f"wrote {', '.join(str(p) for p in paths.values())}")
    return 0
