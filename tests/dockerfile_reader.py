"""A small Dockerfile reader for static checks: instructions in order, with the USER in effect at each one.

Docker cannot run on the project's machines, so ``tests/test_infra_configs.py`` checks ``infra/Dockerfile`` by
reading it the way the builder does: line continuations joined, comments dropped, ``ARG`` defaults substituted
(``${NAME}`` and ``$NAME``), and the user each ``RUN`` runs as tracked from the base image's default user through
every ``USER``. Heredocs and ``--mount`` flags are not supported (the image uses neither): a heredoc is refused.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass

# The default user of base images this project builds on (what ``docker inspect`` reports as Config.User).
# Ray's images end their base layer with ``USER 1000`` (user `ray`, home /home/ray); anything else: root.
BASE_IMAGE_USERS: Mapping[str, str] = {"rayproject/ray": "ray"}
# uids and names that are the same account in those images
USER_ALIASES: Mapping[str, str] = {"0": "root", "1000": "ray"}

_VAR = re.compile(r"\$\{(\w+)\}|\$(\w+)")


@dataclass(frozen=True)
class Instruction:
    """One instruction: keyword upper-cased, arguments with ARG/ENV values substituted, the user it runs as."""

    keyword: str
    args: str
    raw_args: str
    line: int
    user: str
    stage: int

    def words(self) -> list[str]:
        """The arguments split as a shell would (quotes removed), for RUN command checks."""
        return shlex.split(self.args, comments=False, posix=True)


def _logical_lines(text: str) -> list[tuple[int, str]]:
    """(first line number, instruction text) with continuations joined and comment lines dropped."""
    out: list[tuple[int, str]] = []
    pending: list[str] = []
    start = 0
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if pending and stripped.startswith("#"):
            continue  # Docker drops comment lines inside a continued instruction
        if "<<" in stripped and re.search(r"<<-?\s*['\"]?\w+", stripped) and not pending:
            raise ValueError(f"line {number}: heredocs are not supported by this reader")
        if not pending:
            start = number
        if stripped.endswith("\\"):
            pending.append(stripped[:-1].rstrip())
            continue
        pending.append(stripped)
        out.append((start, " ".join(part for part in pending if part)))
        pending = []
    if pending:
        out.append((start, " ".join(pending)))
    return out


def _substitute(value: str, variables: Mapping[str, str]) -> str:
    def repl(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        return variables.get(name, match.group(0))

    return _VAR.sub(repl, value)


def _normalise_user(user: str) -> str:
    name = user.split(":", 1)[0].strip()
    return USER_ALIASES.get(name, name)


def base_image_user(image: str) -> str:
    """The user a base image runs as, from its repository name (tag ignored)."""
    repository = image.split("@", 1)[0].rsplit(":", 1)[0] if "/" in image else image.split(":", 1)[0]
    return BASE_IMAGE_USERS.get(repository, "root")


def parse(text: str) -> list[Instruction]:
    """Every instruction of a Dockerfile, in order, with the user in effect when it runs."""
    global_args: dict[str, str] = {}
    stage_vars: dict[str, str] = {}
    user = "root"
    stage = -1
    result: list[Instruction] = []
    for line, body in _logical_lines(text):
        keyword, _, raw = body.partition(" ")
        keyword = keyword.upper()
        raw = raw.strip()
        if keyword == "ARG":
            name, has_default, default = raw.partition("=")
            name = name.strip()
            if stage < 0:
                global_args[name] = default.strip().strip('"') if has_default else ""
            elif has_default:
                stage_vars[name] = _substitute(default.strip().strip('"'), stage_vars)
            elif name in global_args:
                stage_vars[name] = global_args[name]  # re-declared after FROM: takes the global default
        variables = global_args if keyword == "FROM" else stage_vars
        args = _substitute(raw, variables)
        if keyword == "FROM":
            stage += 1
            stage_vars = {}
            image = args.split()[0]
            user = base_image_user(image)
        elif keyword == "USER":
            user = _normalise_user(args)
        elif keyword == "ENV":
            for name, value in re.findall(r"(\w+)=(\"[^\"]*\"|\S+)", args):
                stage_vars[name] = value.strip('"')
        result.append(Instruction(keyword, args, raw, line, user, stage))
    return result


def final_user(instructions: list[Instruction]) -> str:
    """The user the built image runs as: the user in effect after the last instruction."""
    if not instructions:
        raise ValueError("empty Dockerfile")
    last = instructions[-1]
    return last.user
