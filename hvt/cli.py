"""`hvt` — the command line over the library: synth, shard, train, sweep, evaluate, registry, predict, models, flops,
browse, store.

Each subcommand lives in ``hvt/commands/<name>.py`` and exposes ``register(subparsers)``; the handler returns
an exit code. Errors a user can fix are printed as one line (what failed, on which input, what to do), exit 2.
Every option's help shows its effective default (``hvt.commands.defaults``).
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import importlib
import logging
import os
import sys
from collections.abc import Iterator

from hvt.commands.defaults import apply_formatter

# Each command module keeps its module-level imports light (argparse, stdlib): it imports the library when it
# runs, so `hvt --help` and `hvt COMMAND --help` start in well under a second (tests/test_architecture.py).
COMMAND_MODULES = (
    "synth", "shard", "train", "sweep", "evaluate", "registry", "predict", "models", "flops", "browse", "store",
    "infer", "export",
)


_STORAGE_FULL = {errno.ENOSPC, errno.EDQUOT, errno.EROFS}


class UsageError(Exception):
    """Bad input from the user; printed without a traceback."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hvt",
        description=(
            "HaltingVT pipeline: synth (a synthetic motion video set) -> shard (videos + annotations -> versioned "
            "WebDataset shards) -> train (Ray Train, then evaluate and register) -> evaluate / predict with a "
            "registered model (--model NAME[@REF]). Every option's help shows its default; `hvt train "
            "--print-config` prints a whole training config, configs/ holds the demo's and the paper's."
        ),
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(f"hvt.commands.{name}").register(subparsers)
    apply_formatter(parser)
    return parser


@contextlib.contextmanager
def _stdout_for_json_only() -> Iterator[None]:
    """While a ``--json`` command runs, fd 1 and ``sys.stdout`` point at stderr (so Ray, libraries and child
    processes cannot write to stdout) and ``hvt.commands.emit_json`` writes to the real stdout."""
    import hvt.commands

    previous = sys.stdout
    previous.flush()
    try:
        on_fd1 = previous.fileno() == 1
    except (AttributeError, OSError, ValueError):  # a captured or in-memory stdout (tests, notebooks)
        on_fd1 = False
    saved = os.dup(1)
    real_stdout = os.fdopen(os.dup(saved), "w") if on_fd1 else previous
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    hvt.commands.json_stream = real_stdout
    try:
        yield
    finally:
        hvt.commands.json_stream = None
        sys.stdout = previous
        sys.stderr.flush()
        if real_stdout is not previous:
            real_stdout.close()
        os.dup2(saved, 1)
        os.close(saved)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    from hvt.errors import user_errors
    from hvt.store_faults import is_transient

    output = _stdout_for_json_only() if getattr(args, "json", False) else contextlib.nullcontext()
    try:
        with output:
            return int(args.func(args) or 0)
    except BrokenPipeError:
        # the reader of our stdout went away (`hvt models | head`): not an error of the command
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except Exception as err:
        if isinstance(err, user_errors()):
            print(f"hvt {args.command}: error: {err}", file=sys.stderr)
            return 2
        if isinstance(err, OSError) and err.errno in _STORAGE_FULL:
            print(f"hvt {args.command}: error: {err.strerror} ({err.filename or 'writing to the store'}): free "
                  "space or use another store, then re-run; nothing already committed was changed", file=sys.stderr)
            return 2
        if not is_transient(err):
            raise
        print(f"hvt {args.command}: error: the store is unavailable ({type(err).__name__}: {str(err)[:200]}); "
              "check that it is up and reachable, then re-run: finished work is kept", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
