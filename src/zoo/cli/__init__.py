"""The `zoo` command: a thin shell over zoo.api, one module per group of commands.

Every error is one line on stderr (`zoo: error: ...`) and exit status 2, never a traceback; warnings
are one line each too. A reader that stops reading (`zoo list | head -1`) ends the command quietly.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import warnings
from collections.abc import Sequence
from typing import TextIO

from zoo.cli import artefacts, demo, evaluate, models, predict, weights
from zoo.cli._common import Parser, one_line, say

# the demo's steps and its network probe stay reachable here, where tests and scripts have always found them
from zoo.cli.demo import DEMO_PREDICT_MODEL as DEMO_PREDICT_MODEL
from zoo.cli.demo import _demo_features as _demo_features
from zoo.cli.demo import _demo_predict as _demo_predict
from zoo.cli.demo import _demo_weights as _demo_weights
from zoo.cli.demo import _network_problem as _network_problem
from zoo.domain.errors import ZooError

__all__ = ["build_parser", "main"]

TRACEBACK_ENV = "ZOO_TRACEBACK"  # set to 1: an unexpected error (a bug in zoo) shows its traceback


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the `zoo` command."""
    from zoo import __version__

    parser = Parser(prog="zoo", description="A typed model zoo for PyTorch image models.")
    parser.add_argument("--version", action="version", version=f"zoo {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    models.add_parsers(sub)  # list, info, features
    weights.add_parsers(sub)  # fetch, cache
    artefacts.add_parsers(sub)  # prune, export
    predict.add_parsers(sub)
    evaluate.add_parsers(sub)  # validate, benchmark
    demo.add_parsers(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `zoo` console script: the command's exit status (2 for any error)."""
    last_resort = logging.lastResort
    with warnings.catch_warnings():
        warnings.showwarning = _show_warning
        # a library's warning logged with no handler set up (torch.export's) comes out as one line too
        logging.lastResort = _OneLineLog(logging.WARNING)
        try:
            return _run(argv)
        except BrokenPipeError:
            # the reader has gone (`zoo list | head -1`): what it wanted it has; the rest has nowhere to go
            _discard_stdout()
            return 0
        except KeyboardInterrupt:
            say("error", "interrupted")
            return 130
        except ZooError as err:
            say("error", err)
            return 2
        except Exception as err:
            if os.environ.get(TRACEBACK_ENV, "").strip().lower() in ("1", "true", "yes", "on"):
                raise
            say(
                "error",
                f"internal error, a bug in zoo: {type(err).__name__}: {one_line(err)[:500]} "
                f"(set {TRACEBACK_ENV}=1 for the traceback)",
            )
            return 2
        finally:
            logging.lastResort = last_resort


def _run(argv: Sequence[str] | None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as done:  # --help, --version, or a usage error already said in one line
        return done.code if isinstance(done.code, int) else 0 if done.code is None else 2
    code: int = args.func(args)
    sys.stdout.flush()  # a closed pipe shows here, inside the handlers, and not at interpreter exit
    return code


def _discard_stdout() -> None:
    """Point the process's stdout at the null device, so that the final flush at exit cannot fail again."""
    stdout: TextIO | None = sys.__stdout__
    if stdout is None or sys.stdout is not stdout:  # replaced (a test's capture): nothing is left for exit to flush
        return
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):  # no fd to replace: nothing more can be done, and nothing needs to be
        pass


def _show_warning(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: TextIO | None = None,
    line: str | None = None,
) -> None:
    """A warning as one line on stderr, without the source line Python would show."""
    say("warning", message)


class _OneLineLog(logging.Handler):
    """A log record as one warning line on stderr."""

    def emit(self, record: logging.LogRecord) -> None:
        say("warning", record.getMessage())
