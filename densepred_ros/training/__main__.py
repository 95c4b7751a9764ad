"""`python -m densepred_ros.training {train,evaluate-model} ...` (see `training.cli`)."""

import argparse
import sys
from typing import List, Optional

from densepred_ros.training import cli


def main(argv: Optional[List[str]] = None) -> int:
    """Parse the arguments and run the subcommand."""
    parser = argparse.ArgumentParser(prog='python -m densepred_ros.training')
    sub = parser.add_subparsers(dest='command', required=True)
    train = sub.add_parser('train', help='same as `densepred train`')
    cli.add_arguments(train)
    train.set_defaults(func=cli.run)
    evaluate = sub.add_parser('evaluate-model',
                              help='accuracy on held-out generated scenes after lidar alignment')
    cli.add_evaluate_arguments(evaluate)
    evaluate.set_defaults(func=cli.run_evaluate)
    args = parser.parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == '__main__':
    sys.exit(main())
