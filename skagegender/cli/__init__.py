"""The ``skagegender`` command line.

Sub-commands, one module each: ``predict`` (age and gender of every face),
``embed`` (features to an .npz file), ``evaluate`` (scores on a labeled dataset),
``train`` (fit and save a model) and ``tune`` (Optuna search over heads). Each
module declares its options (``add_arguments``) and runs over library functions
(``run``); what they share is in :mod:`._common`. With ``--json`` or ``--jsonl``
the only thing on stdout is JSON; progress, warnings and errors go to stderr.

Exit codes: 0 success (an image without a face is a success); 1 when some
inputs could not be read (the others are still reported); 2 for usage errors
and when there is nothing to do (e.g. only empty folders); 130 after Ctrl-C.
"""

import argparse
import os
import sys

from . import embed, evaluate, predict, train, tune
from ._common import (
    _PER_INPUT_CODES,
    EXIT_INTERRUPTED,
    EXIT_SOME_FAILED,
    EXIT_USAGE,
    _error,
    _exit_codes,
    _HelpFormatter,
    _version,
)

__all__ = ["build_parser", "main"]

COMMANDS = (predict, embed, evaluate, train, tune)


def build_parser():
    """The ``skagegender`` argument parser with its sub-commands."""
    parser = argparse.ArgumentParser(
        prog="skagegender", description="Age and gender estimation from face photos.",
        formatter_class=_HelpFormatter, epilog=_exit_codes(*_PER_INPUT_CODES))
    parser.add_argument("--version", action="version", version=f"skagegender {_version()}")
    sub = parser.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        command.add_arguments(sub)
    return parser


def main(argv=None):
    """Run the ``skagegender`` command; returns its exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "paths", None) == [] and args.files_from is None:
        parser.error(f"{args.command}: give image files or folders, or --files-from FILE "
                     "('-' for standard input)")
    try:
        return args.func(args)
    except KeyboardInterrupt:
        _error(args.command, "interrupted")
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # the reader left (e.g. `| head`): stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_SOME_FAILED
    except (FileNotFoundError, ValueError, ImportError) as exc:
        from ..model import ModelFileError

        _error(args.command, f"error: {exc}")
        usage = isinstance(exc, (FileNotFoundError, ModelFileError)) or getattr(
            exc, "usage", False) is True
        return EXIT_USAGE if usage else EXIT_SOME_FAILED
