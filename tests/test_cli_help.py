"""`hvt ... --help`: every option shows its effective default, and the defaults shown are the config classes'."""

from __future__ import annotations

import argparse
import re
import subprocess
import sys

import pytest

from hvt import cli
from hvt.commands.defaults import iter_parsers, option_help

_DEFAULT = re.compile(r"\(default: (?P<value>[^)]*)\)$")


def _parsers() -> list[tuple[str, argparse.ArgumentParser]]:
    return iter_parsers(cli.build_parser())


def _options(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    return {action.option_strings[-1]: action for action in parser._actions if action.option_strings}


def _shown(parser: argparse.ArgumentParser, flag: str) -> str:
    """The default ``flag``'s help prints, e.g. ``0.001`` from ``... (default: 0.001; 1e-05 with --recipe ...)``."""
    text = option_help(parser, _options(parser)[flag])
    match = _DEFAULT.search(text)
    assert match, f"{parser.prog} {flag}: its help shows no default: {text!r}"
    return match.group("value")


def _takes_no_default(action: argparse.Action, text: str) -> bool:
    """Flags (store_true...), --help, positionals and required options have no default to show."""
    return action.nargs == 0 or not action.option_strings or action.required or "required" in text


@pytest.mark.parametrize("prog", [prog for prog, _ in _parsers()])
def test_every_option_shows_its_default_or_is_a_flag_or_required(prog):
    parser = dict(_parsers())[prog]
    silent = []
    for action in parser._actions:
        text = option_help(parser, action)
        if _takes_no_default(action, text):
            continue
        if "(default" not in text.lower() and "default:" not in text.lower():
            silent.append(f"{'/'.join(action.option_strings)}: {text!r}")
    assert not silent, f"{prog}: options whose help shows no default: " + "; ".join(silent)


def test_the_walk_covers_every_command_and_nested_action():
    progs = {prog for prog, _ in _parsers()}
    assert {f"hvt {name}" for name in cli.COMMAND_MODULES} <= progs
    assert {"hvt registry list", "hvt registry import", "hvt store gc"} <= progs


def test_train_help_shows_train_configs_own_defaults():
    """What `hvt train --help` prints is what an empty `hvt train` trains with (TrainConfig())."""
    from hvt.commands.defaults import render_value
    from hvt.commands.train import CONFIG_FLAGS
    from hvt.config import OptimConfig, TrainConfig

    parser = dict(_parsers())["hvt train"]
    built = TrainConfig()
    options = {action.dest: flag for flag, action in _options(parser).items()}
    checked = 0
    for dest, section, key in CONFIG_FLAGS:
        value = getattr(getattr(built, section), key)
        if value is None:  # "not set" is explained in words, e.g. "(default: start a local Ray)"
            assert "(default" in option_help(parser, _options(parser)[options[dest]])
            continue
        assert _shown(parser, options[dest]).split(";")[0] == render_value(value), options[dest]
        checked += 1
    assert checked >= 9
    assert _shown(parser, "--model") == built.model.name == "haltingvt-micro-g03-b10"
    assert _shown(parser, "--dataset") == built.dataset_name
    assert _shown(parser, "--seed") == str(built.seed)
    assert _shown(parser, "--sampling") == built.data.sampling == "8x32x1"
    assert _shown(parser, "--recipe") == "scratch" and built.optim == OptimConfig.recipe("scratch")
    paper = OptimConfig.recipe("paper-finetune")
    assert _shown(parser, "--lr") == f"{built.optim.lr:g}; {paper.lr:g} with --recipe paper-finetune"


def test_shard_and_synth_help_show_the_librarys_defaults():
    import inspect

    from hvt.ingest.config import ShardConfig, TranscodeOptions
    from hvt.ingest.synthetic import make_synthetic_dataset

    shard = dict(_parsers())["hvt shard"]
    assert _shown(shard, "--shard-size") == str(ShardConfig.model_fields["shard_size"].default)
    assert _shown(shard, "--keyint") == str(TranscodeOptions().keyint)
    assert _shown(shard, "--preset") == TranscodeOptions().preset
    synth = dict(_parsers())["hvt synth"]
    library = inspect.signature(make_synthetic_dataset).parameters
    assert _shown(synth, "--per-class") == str(library["per_class"].default)
    assert _shown(synth, "--size") == "x".join(map(str, library["size"].default))


def test_top_level_help_lists_every_command_with_its_description():
    proc = subprocess.run([sys.executable, "-m", "hvt.cli", "--help"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0
    subparsers = next(a for a in cli.build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    listed = {choice.dest: choice.help for choice in subparsers._choices_actions}
    assert set(listed) == set(cli.COMMAND_MODULES)
    for name, description in listed.items():
        assert description and re.search(rf"^\s+{name}\s+\S", proc.stdout, re.M), f"{name} is not listed"
    registry = dict(_parsers())["hvt registry"]
    actions = next(a for a in registry._actions if isinstance(a, argparse._SubParsersAction))
    for action in actions.choices:  # the one-line description names every registry action
        assert action in listed["registry"], f"`hvt --help` does not say registry does {action}"


def test_models_lists_every_variant_explains_names_and_marks_the_papers(capsys):
    import json

    from hvt.model.zoo import NAMING, PAPER_VARIANTS, get_config, list_models

    assert cli.main(["models", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert listed["naming"] == NAMING and "gKK" in NAMING and "beta" in NAMING
    rows = {row["name"]: row for row in listed["models"]}
    assert list(rows) == list_models()
    assert {name for name, row in rows.items() if row["paper"]} == set(PAPER_VARIANTS)
    assert [name for name, row in rows.items() if row["default"]] == ["haltingvt-micro-g03-b10"]
    g05 = rows["haltingvt-s-g05-b20"]
    assert (g05["keep_rate"], g05["beta"], g05["width"]) == (0.5, 20.0, get_config("haltingvt-s-g05-b20").embed_dim)
    assert rows["jointvt-s"]["keep_rate"] is None and rows["jointvt-s"]["beta"] is None
    assert cli.main(["models", "--paper"]) == 0
    text = capsys.readouterr().out
    assert text.splitlines()[0] == NAMING
    assert all(f"{name} " in text for name in PAPER_VARIANTS) and "haltingvt-micro" not in text
    assert text.count("(paper)") == len(PAPER_VARIANTS)
