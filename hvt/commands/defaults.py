"""Every `hvt` option's help shows its effective default, read from where the default really lives.

Many flags default to None in argparse ("not given"), so a ``--config`` file or a recipe can supply the value;
their effective default is a field of a config class (``TrainConfig``, ``ShardConfig``...). ``config_default``
points a flag's help at that field; the class is imported only when help is printed, so `hvt --help` stays light.
``apply_formatter`` gives every parser of the command tree a formatter that appends ``(default: ...)`` to each
option that takes a value and does not already explain its default in words.
"""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Callable
from typing import Any

# set on an argparse Action: the default to show, or a function returning it (evaluated when help is printed)
SHOWN_DEFAULT = "shown_default"


def field_default(model: type, path: str) -> Any:
    """The default of the field at dotted ``path`` of pydantic ``model`` (``"optim.lr"`` of ``TrainConfig``),
    walking nested models through their field types without building the outer model."""
    cls: Any = model
    parts = path.split(".")
    for depth, part in enumerate(parts):
        fields = getattr(cls, "model_fields", None)
        if fields is None or part not in fields:
            raise KeyError(f"{model.__name__} has no field {'.'.join(parts[:depth + 1])!r}")
        field = fields[part]
        if depth == len(parts) - 1:
            return field.get_default(call_default_factory=True)
        cls = field.annotation
    raise KeyError(f"{model.__name__}: empty field path")


def config_default(target: str, path: str, render: Callable[[Any], str] | None = None) -> Callable[[], str]:
    """A lazy shown default: field ``path`` of the class ``target`` (``"hvt.config:TrainConfig"``), rendered."""

    def read() -> str:
        module, _, name = target.partition(":")
        value = field_default(getattr(importlib.import_module(module), name), path)
        return render(value) if render else render_value(value)

    return read


def constant_default(target: str, render: Callable[[Any], str] | None = None) -> Callable[[], str]:
    """A lazy shown default: the module constant ``target`` (``"hvt.maintenance.gc:DEFAULT_KEEP_RUNS"``)."""

    def read() -> str:
        module, _, name = target.partition(":")
        value = getattr(importlib.import_module(module), name)
        return render(value) if render else render_value(value)

    return read


def show_default(action: argparse.Action, value: Any) -> argparse.Action:
    """Make ``action``'s help show ``value`` (or ``value()`` when callable) as its default; returns ``action``."""
    setattr(action, SHOWN_DEFAULT, value)
    return action


def render_value(value: Any) -> str:
    """A default as a user would type it: ``0.001``, ``8``, ``auto``, ``256,320``, ``none``."""
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, (tuple, list)):
        return ",".join(render_value(item) for item in value) if value else "none"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def shown_default(action: argparse.Action) -> str | None:
    """The default ``action``'s help should show, or None when it takes no value or shows nothing by itself."""
    if action.nargs == 0 or not action.option_strings or action.required:
        return None  # a flag (store_true, help...), a positional or a required option: no default to show
    value = getattr(action, SHOWN_DEFAULT, action.default)
    if callable(value):
        value = value()
    if value is None or value is argparse.SUPPRESS or value == []:
        return None
    return value if isinstance(value, str) else render_value(value)


def explains_default(help_text: str) -> bool:
    """True when a help text already says its default in words, e.g. ``(default: $HVT_STORE or ./hvt-store)``."""
    lowered = help_text.lower()
    return "(default" in lowered or "default:" in lowered


class DefaultsHelpFormatter(argparse.HelpFormatter):
    """Appends ``(default: X)`` to each option's help (see ``shown_default``) unless the help already says it."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if text is argparse.SUPPRESS or explains_default(text):
            return text
        value = shown_default(action)
        if value is None:
            return text
        value = value.replace("%", "%%")  # argparse %-formats help strings
        return f"{text} (default: {value})" if text else f"default: {value}"


class RawDescriptionDefaultsHelpFormatter(DefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """``DefaultsHelpFormatter`` that keeps the description's line breaks."""


def iter_parsers(parser: argparse.ArgumentParser) -> list[tuple[str, argparse.ArgumentParser]]:
    """``parser`` and every subcommand parser below it, each with its command path (``"hvt registry list"``)."""
    found = [(parser.prog, parser)]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in dict.fromkeys(action.choices.values()):  # aliases map to the same parser once
                found += iter_parsers(child)
    return found


def apply_formatter(parser: argparse.ArgumentParser) -> None:
    """Give ``parser`` and all its subcommand parsers the defaults-showing formatter (raw descriptions kept)."""
    for _, each in iter_parsers(parser):
        raw = issubclass(each.formatter_class, argparse.RawDescriptionHelpFormatter)
        each.formatter_class = RawDescriptionDefaultsHelpFormatter if raw else DefaultsHelpFormatter


def option_help(parser: argparse.ArgumentParser, action: argparse.Action) -> str:
    """``action``'s help as ``parser --help`` prints it (defaults included), on one line."""
    formatter = parser._get_formatter()
    return " ".join(formatter._expand_help(action).split()) if action.help else ""
