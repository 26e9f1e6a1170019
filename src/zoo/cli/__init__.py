"""The `zoo` command: a thin shell over zoo.api, one module per group of commands."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from zoo.cli import artefacts, demo, models, predict, weights

# the demo's steps and its network probe stay reachable here, where tests and scripts have always found them
from zoo.cli.demo import DEMO_PREDICT_MODEL as DEMO_PREDICT_MODEL
from zoo.cli.demo import _demo_features as _demo_features
from zoo.cli.demo import _demo_predict as _demo_predict
from zoo.cli.demo import _demo_weights as _demo_weights
from zoo.cli.demo import _network_problem as _network_problem
from zoo.domain.errors import ZooError

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the `zoo` command."""
    parser = argparse.ArgumentParser(prog="zoo", description="A typed model zoo for PyTorch image models.")
    sub = parser.add_subparsers(dest="command", required=True)
    models.add_parsers(sub)  # list, info, features
    weights.add_parsers(sub)  # fetch, cache
    artefacts.add_parsers(sub)  # prune, export
    predict.add_parsers(sub)
    demo.add_parsers(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `zoo` console script."""
    args = build_parser().parse_args(argv)
    try:
        code: int = args.func(args)
    except ZooError as err:
        print(f"zoo: error: {err}", file=sys.stderr)
        return 2
    return code
