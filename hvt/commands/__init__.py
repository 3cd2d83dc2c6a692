"""The `hvt` subcommands, one module each (see ``hvt.cli``)."""

from __future__ import annotations

import json
import sys
from typing import IO, Any

# Where ``emit_json`` writes. With ``--json``, ``hvt.cli`` points this at the real stdout and sends everything
# else written to stdout (Ray, libraries, stray prints) to stderr, so stdout carries the JSON document only.
json_stream: IO[str] | None = None


def emit_json(obj: Any, **dumps_kwargs: Any) -> None:
    """Print ``obj`` as the command's JSON output."""
    stream = json_stream or sys.stdout
    stream.write(json.dumps(obj, **dumps_kwargs) + "\n")
    stream.flush()
