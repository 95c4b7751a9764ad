"""`python -m densepred_ros.training {train,evaluate-model} ...` (see `training.cli`).

Errors follow `densepred_ros.cli_errors`, as for `densepred`: a user mistake or bad input
prints one line `densepred <command>: error: <what> (<path or value>)` and exits 2, a bug
keeps its traceback (exit 1), Ctrl-C exits 130, `--debug` or DENSEPRED_DEBUG=1 shows every
traceback.
"""

import argparse
import sys
from typing import List, Optional

from densepred_ros.cli import _Parser
from densepred_ros.cli_errors import EXIT_USER, run_command
from densepred_ros.training import cli


def build_parser() -> argparse.ArgumentParser:
    """Return the parser of `python -m densepred_ros.training`."""
    parser = _Parser(prog='python -m densepred_ros.training')
    parser.add_argument('--debug', action='store_true',
                        help='print the traceback of every error (also: DENSEPRED_DEBUG=1)')
    sub = parser.add_subparsers(dest='command', required=True)
    train = sub.add_parser('train', help='same as `densepred train`')
    cli.add_arguments(train)
    train.set_defaults(func=cli.run)
    evaluate = sub.add_parser('evaluate-model',
                              help='accuracy on held-out generated scenes after lidar alignment')
    cli.add_evaluate_arguments(evaluate)
    evaluate.set_defaults(func=cli.run_evaluate)
    for command in sub.choices.values():
        # Also accepted after the subcommand; SUPPRESS keeps a --debug given before it.
        command.add_argument('--debug', action='store_true', default=argparse.SUPPRESS,
                             help='print the traceback of every error')
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    """Parse the arguments and run the subcommand under the error policy; the exit code."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:   # --help (0) or a usage error (2, one line printed)
        return exc.code if isinstance(exc.code, int) else EXIT_USER
    return run_command(args.command, args.func, args)


if __name__ == '__main__':
    sys.exit(main())
