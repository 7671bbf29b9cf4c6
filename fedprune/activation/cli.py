"""The ``fedprune activation-privacy`` subcommand (registered by the top-level CLI)."""

from __future__ import annotations

import argparse
import dataclasses
import logging
from typing import Any

from fedprune.activation.study import (
    ActivationPrivacyConfig,
    run_activation_privacy,
    save_activation_privacy,
)
from fedprune.flags import ACTIVATION_FLAGS, add_flags, add_output_flags, overrides

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
    add_flags(parser, ACTIVATION_FLAGS, defaults=dataclasses.asdict(_DEFAULTS))
    # The options every fedprune command shares: --out DIR (here default DEFAULT_OUT), --quiet.
    add_output_flags(parser, key="out")
    parser.set_defaults(out=DEFAULT_OUT, func=run_activation_privacy_command)


def run_activation_privacy_command(args: argparse.Namespace) -> int:
    """Run the study from parsed arguments and write its outputs; 0 on success.

    Bad settings raise ``ValueError`` before anything is written (``fedprune``'s ``main`` turns
    it into one error line and exit status 2, as for every command).
    """
    given = overrides(args, ACTIVATION_FLAGS)
    if "keep_fractions" in given:
        given["keep_fractions"] = tuple(given["keep_fractions"])
    config = dataclasses.replace(_DEFAULTS, **given)
    result = run_activation_privacy(config, progress=not args.quiet)
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
