"""Command line: list runs, fetch and prepare data, train one run by hand, test a finished run again, list models, follow a
study (status), export runs to TensorBoard/MLflow, benchmark, plan."""

from __future__ import annotations

import argparse
import os
import sys

from fmnist.cli import bench, data, evaluate, export, models, plan, record, runs, status, train
from fmnist.cli.common import DEFAULT_CONFIG
from fmnist.config import ConfigError

COMMANDS = (runs, train, evaluate, data, models, plan, bench, status, export, record)
"""The command modules, in the order `fmnist --help` lists them; each adds its parser(s) with
`add_parser(sub)`, whose defaults name the handler (`func`)."""

__all__ = ["COMMANDS", "DEFAULT_CONFIG", "build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fmnist", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        command.add_parser(sub)
    return parser


EXIT_BROKEN_PIPE = 141
"""The status of a command whose reader went away (`fmnist status | head`): 128 + SIGPIPE, as a shell
reports a command a closed pipe ended."""


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        rc = args.func(args)
        sys.stdout.flush()  # a closed pipe shows here at the latest, not at interpreter exit
        return rc
    except ConfigError as exc:
        print(f"fmnist: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        return closed_pipe()


def closed_pipe() -> int:
    """The reader of stdout has gone (`| head`): end quietly, no traceback. stdout points to /dev/null
    from here on, so the flush at interpreter exit finds nowhere to fail (the Python docs' recipe,
    'Note on SIGPIPE')."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
    return EXIT_BROKEN_PIPE
