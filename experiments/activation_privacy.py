"""Run the activation-privacy study (issue 5) as `fedprune activation-privacy` would.

Usage: python experiments/activation_privacy.py [--layer 3] [--keep 0.3 0.1] [--out DIR]
"""

import argparse
import logging
import sys

import torch

from fedprune.activation import add_activation_privacy_parser

if __name__ == "__main__":
    torch.set_num_threads(1)  # 2 shared cores: keep this quick study to one
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    parser = argparse.ArgumentParser(prog="activation_privacy")
    add_activation_privacy_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["activation-privacy", *sys.argv[1:]])
    sys.exit(args.func(args))
