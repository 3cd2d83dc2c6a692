"""`hvt` — the command line over the library: synthesize, shard, train, evaluate, registry, flops, predict.

Each subcommand lives in ``hvt/commands/<name>.py`` and exposes ``register(subparsers)``; the handler returns
an exit code. Errors a user can fix are printed as one line (what failed, on which input, what to do), exit 2.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

# Each command module keeps its module-level imports light (argparse, stdlib): it imports the library when it
# runs, so `hvt --help` and `hvt COMMAND --help` start in well under a second (tests/test_architecture.py).
COMMAND_MODULES = ("synth", "shard", "train", "evaluate", "registry", "flops", "predict", "browse")


class UsageError(Exception):
    """Bad input from the user; printed without a traceback."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hvt",
        description=(
            "HaltingVT pipeline. Stages: synth (make a synthetic motion video set) -> shard (videos + annotations "
            "-> WebDataset shards) -> train (Ray Train, then evaluate and register) -> evaluate -> registry."
        ),
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(f"hvt.commands.{name}").register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    from hvt.errors import user_errors

    try:
        return int(args.func(args) or 0)
    except Exception as err:
        if not isinstance(err, user_errors()):
            raise
        print(f"hvt {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
