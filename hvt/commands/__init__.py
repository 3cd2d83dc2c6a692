"""The `hvt` subcommands, one module each (see ``hvt.cli``)."""

from __future__ import annotations

import json
import sys
from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:
    import argparse

# Where ``emit_json`` writes. With ``--json``, ``hvt.cli`` points this at the real stdout and sends everything
# else written to stdout (Ray, libraries, stray prints) to stderr, so stdout carries the JSON document only.
json_stream: IO[str] | None = None


def add_config_file_arguments(parser: argparse.ArgumentParser, config_class: str, work: str, example: str = "") -> None:
    """``--config JSON`` (a ``config_class`` file the flags override) and ``--print-config`` (print the resolved
    config and exit before ``work``) on an argparse ``parser``; ``example`` names a file to start from."""
    parser.add_argument("--config", default=None, metavar="JSON",
                        help=f"{config_class} as a JSON file ({example + ', or ' if example else ''}what "
                        "--print-config prints); flags below override it (default: none: the defaults shown here)")
    parser.add_argument("--print-config", action="store_true",
                        help=f"print the resolved {config_class} (after --config and flags) as JSON and exit without "
                        f"{work}: a template for --config")


def read_config_file(path: str | None, command: str) -> dict[str, Any]:
    """The JSON object in the ``--config`` file ``path`` (local or a store URL), ``{}`` when none is given; a
    missing file, bad JSON or anything but an object is an ``InputError`` naming the file and what to pass
    (what ``hvt COMMAND --print-config`` prints)."""
    from hvt import storage
    from hvt.errors import InputError

    if not path:
        return {}
    try:
        loaded = json.loads(storage.read_text(path))
    except FileNotFoundError as err:
        raise InputError(f"--config {path}: file not found") from err
    except json.JSONDecodeError as err:
        raise InputError(f"--config {path}: not valid JSON ({err})") from err
    if not isinstance(loaded, dict):
        raise InputError(f"--config {path}: expected a JSON object, e.g. what `hvt {command} --print-config` prints")
    return loaded


def emit_json(obj: Any, **dumps_kwargs: Any) -> None:
    """Print ``obj`` as the command's JSON output."""
    stream = json_stream or sys.stdout
    stream.write(json.dumps(obj, **dumps_kwargs) + "\n")
    stream.flush()
