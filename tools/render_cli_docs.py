"""Render docs/CLI.md from the `hvt` argparse parsers: the `--help` of every subcommand, below the file's
hand-written part.

    python tools/render_cli_docs.py          # rewrite docs/CLI.md
    python tools/render_cli_docs.py --check  # exit 1 when docs/CLI.md is not what the parsers give

Everything above the line ``MARKER`` is kept as written; everything below is generated. `tests/test_readme_flags.py`
fails when the generated part is stale, so a new flag reaches the reference in the same commit.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CLI_MD = ROOT / "docs" / "CLI.md"
MARKER = "<!-- generated below by `python tools/render_cli_docs.py`: do not edit by hand -->"
WIDTH = "100"  # argparse wraps help at $COLUMNS - 2: fixed, so the output does not depend on the terminal


def subcommands(parser: argparse.ArgumentParser) -> Iterator[tuple[str, str, argparse.ArgumentParser]]:
    """(prog, one-line help, parser) of every subcommand under ``parser``, depth first, in declaration order."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {choice.dest: choice.help or "" for choice in action._choices_actions}
            for name, sub in action.choices.items():
                yield sub.prog, helps.get(name, ""), sub
                yield from subcommands(sub)


def render() -> str:
    """The generated part of docs/CLI.md (starting with ``MARKER``)."""
    sys.path.insert(0, str(ROOT))  # this checkout's hvt, not an installed one
    from hvt.cli import build_parser

    previous = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = WIDTH
    try:
        parser = build_parser()
        parts = [MARKER, "", "## `hvt`", "", "```", parser.format_help().rstrip(), "```", ""]
        for prog, summary, sub in subcommands(parser):
            parts += [f"## `{prog}`", ""]
            if summary:
                parts += [summary[0].upper() + summary[1:] + ".", ""]
            parts += ["```", sub.format_help().rstrip(), "```", ""]
    finally:
        if previous is None:
            os.environ.pop("COLUMNS", None)
        else:
            os.environ["COLUMNS"] = previous
    return "\n".join(parts)


def current_text(path: Path = CLI_MD) -> str:
    """What docs/CLI.md would be with its generated part rendered anew."""
    text = path.read_text(encoding="utf-8") if path.exists() else ""
    head = text.split(MARKER, 1)[0] if MARKER in text else text
    return head.rstrip("\n") + "\n\n" + render()


def main(argv: list[str] | None = None) -> int:
    args = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    args.add_argument("--check", action="store_true", help="only check that docs/CLI.md is current")
    opts = args.parse_args(argv)
    wanted = current_text()
    if opts.check:
        if CLI_MD.read_text(encoding="utf-8") != wanted:
            print(f"{CLI_MD} is stale: run python tools/render_cli_docs.py", file=sys.stderr)
            return 1
        return 0
    CLI_MD.write_text(wanted, encoding="utf-8")
    print(f"wrote {CLI_MD}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
