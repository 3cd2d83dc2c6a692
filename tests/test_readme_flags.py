"""The README and docs/*.md name only flags, subcommands and make targets that exist.

Every command line written in a code span or a fenced block of README.md or docs/*.md that starts with
`hvt SUBCOMMAND` is checked against that subcommand's argparse parser (built by ``hvt.cli.build_parser``, no
subprocess); `python -m hvt.train.job --flag` against the job's parser; `make TARGET` against the Makefile. And
docs/CLI.md's generated part must be what ``tools/render_cli_docs.py`` renders today.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import io
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

GENERATED_MARKER = "<!-- generated below by"
_FENCE = re.compile(r"^```[^\n]*\n(.*?)^```", re.S | re.M)
_SPAN = re.compile(r"`([^`\n]+)`")
# `hvt` as a command: where a command starts (the fragment's start, after `;`, `&&`, `|`, `(`, `$(`), optionally
# as `.venv/bin/hvt`; not an argument (`ruff check hvt pipelines`), a path (`hvt/ingest`) or a module (`hvt.cli`)
_HVT = re.compile(r"(?:^|(?:;|&&|\|\||\||\(|\$\())\s*(?:\S*/bin/)?hvt(?=\s+\S)")
_FLAG = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]*")
_MAKE = re.compile(r"(?:^|(?<=[\s($'\"]))make\s+([a-z][a-z0-9-]*)")
_JOB = re.compile(r"python -m hvt\.train\.job\b([^\n]*)")
# a command ends at a shell separator or a comment
_END = re.compile(r"\s(?:#|;|&&|\|\||\|)\s|;\s*$")


def _code_fragments(text: str) -> list[str]:
    """Every fenced block (backslash continuations joined, one fragment per line) and every code span."""
    fragments: list[str] = []
    for block in _FENCE.findall(text):
        fragments += block.replace("\\\n", " ").splitlines()
    outside = _FENCE.sub("", text)
    fragments += _SPAN.findall(outside)
    return fragments


def _commands(fragment: str) -> list[str]:
    """The `hvt ...` command lines in ``fragment``: from each `hvt` to the next separator or `hvt`."""
    starts = [m.end() for m in _HVT.finditer(fragment)]
    commands = []
    for i, start in enumerate(starts):
        stop = starts[i + 1] if i + 1 < len(starts) else len(fragment)
        segment = fragment[start:stop]
        end = _END.search(segment)
        commands.append(segment[: end.start()] if end else segment)
    return commands


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _options(parser: argparse.ArgumentParser) -> set[str]:
    return {opt for action in parser._actions for opt in action.option_strings}


def _where_named() -> list[tuple[str, str]]:
    """(file, fragment) of every code fragment of the docs; docs/CLI.md's generated part (the parsers' own
    `--help`) is left out: ``test_cli_reference_is_current`` holds it to the parsers."""
    named = []
    for path in DOCS:
        text = path.read_text(encoding="utf-8").split(GENERATED_MARKER, 1)[0]
        named += [(path.name, fragment) for fragment in _code_fragments(text)]
    return named


def _resolve(parser: argparse.ArgumentParser, command: str) -> tuple[str, argparse.ArgumentParser | None]:
    """The (sub)parser a command line addresses: `hvt registry show ...` -> the `registry show` parser."""
    words, target, prog = command.split(), parser, "hvt"
    for word in words:
        subs = _subparsers(target)
        if not subs:
            break
        if word.startswith("-"):
            continue  # a global flag before the subcommand (`hvt -v train`) or a flag-only line (`hvt --help`)
        if word not in subs:
            if re.fullmatch(r"[a-z][a-z-]*", word):
                return f"{prog} {word}", None
            break  # a placeholder (`hvt COMMAND`, `hvt registry ...`): stay at this level
        target, prog = subs[word], f"{prog} {word}"
    return prog, target


def test_every_hvt_flag_in_the_docs_exists() -> None:
    from hvt.cli import build_parser

    parser = build_parser()
    problems, checked = [], 0
    for name, fragment in _where_named():
        for command in _commands(fragment):
            if not command.strip() or command.strip().startswith(("...", "…")):
                continue
            prog, target = _resolve(parser, command)
            if target is None:
                problems.append(f"{name}: `{prog}` is not an hvt subcommand (in `{fragment.strip()}`)")
                continue
            known = _options(target) | _options(parser)
            for flag in _FLAG.findall(command):
                checked += 1
                if flag not in known:
                    problems.append(f"{name}: `{prog}` has no flag {flag} (in `{fragment.strip()}`)")
    assert checked > 50, f"only {checked} flags found in the docs: is the extraction broken?"
    assert not problems, "docs name what the CLI lacks:\n" + "\n".join(sorted(set(problems)))


def test_every_train_job_flag_in_the_docs_exists() -> None:
    from hvt.train import job

    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit):
        job.main(["--help"])
    known = set(_FLAG.findall(out.getvalue()))
    named = {(name, flag) for name, fragment in _where_named() for tail in _JOB.findall(fragment)
             for flag in _FLAG.findall(tail)}
    assert named, "no `python -m hvt.train.job --flag` in the docs: is the extraction broken?"
    assert not {f"{name}: {flag}" for name, flag in named if flag not in known}


def test_every_make_target_in_the_docs_exists() -> None:
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    targets = set(re.findall(r"^([A-Za-z][\w-]*)\s*:(?!=)", makefile, re.M))
    named = {(name, target) for name, fragment in _where_named() for target in _MAKE.findall(fragment)}
    assert {t for _, t in named} >= {"demo", "test", "test-fast", "lint"}, named
    missing = sorted(f"{name}: make {target}" for name, target in named if target not in targets)
    assert not missing, f"make targets the Makefile lacks: {missing}"


def test_cli_reference_is_current() -> None:
    spec = importlib.util.spec_from_file_location("render_cli_docs", ROOT / "tools" / "render_cli_docs.py")
    assert spec and spec.loader
    render = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(render)
    assert (ROOT / "docs" / "CLI.md").read_text(encoding="utf-8") == render.current_text(), (
        "docs/CLI.md is stale: run `python tools/render_cli_docs.py`"
    )


def test_the_extraction_sees_what_it_should() -> None:
    """The checker itself: a made-up flag in a code span or a block is caught, prose is not read."""
    from hvt.cli import build_parser

    text = "Run `hvt train --store S --no-such-flag`.\n\n```bash\nhvt registry show M v1 --store S \\\n  --bogus\n```\n" \
           "In prose hvt train --ignored is not code; `hvt/ingest` is a path.\n"
    commands = [c for fragment in _code_fragments(text) for c in _commands(fragment)]
    assert len(commands) == 2
    parser = build_parser()
    resolved = [(_resolve(parser, c)[0], _FLAG.findall(c)) for c in commands]
    assert ("hvt registry show", ["--store", "--bogus"]) in resolved
    assert ("hvt train", ["--store", "--no-such-flag"]) in resolved


_LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def _anchors(markdown: str) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation other than `-` and `_` dropped, spaces to `-`."""
    return {re.sub(r"[^\w\- ]", "", line.lstrip("#").strip().lower()).replace(" ", "-")
            for line in _FENCE.sub("", markdown).splitlines() if line.startswith("#")}


def test_relative_links_resolve() -> None:
    """Every relative link of README.md and docs/*.md names a file that exists, and a heading there when it has
    an anchor (a page moved or a heading renamed breaks the link, and this test)."""
    broken = []
    for path in DOCS:
        for target in _LINK.findall(path.read_text(encoding="utf-8")):
            if "://" in target or target.startswith("mailto:"):
                continue
            file, _, anchor = target.partition("#")
            resolved = (path.parent / file).resolve() if file else path
            if not resolved.exists():
                broken.append(f"{path.name}: {target} (no {resolved.relative_to(ROOT)})")
            elif anchor and resolved.suffix == ".md" and anchor not in _anchors(resolved.read_text(encoding="utf-8")):
                broken.append(f"{path.name}: {target} (no heading #{anchor})")
    assert not broken, "broken links:\n" + "\n".join(broken)
