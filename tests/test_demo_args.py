"""`make demo ARGS="..."` reaches `python -m pipelines.demo`, whose flags apply to the demo's config."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from pipelines.demo import build_parser, demo_config

REPO = Path(__file__).resolve().parents[1]


def test_make_demo_forwards_args_to_the_demo():
    makefile = (REPO / "Makefile").read_text()
    recipe = re.search(r"^demo:.*\n((?:\t.*\n)+)", makefile, re.M).group(1)
    assert re.search(r"-m pipelines\.demo \$\(ARGS\)\s*$", recipe), recipe


def test_demo_flags_parse_and_default_to_demo_config():
    args = build_parser().parse_args(["--augment-on", "decode", "--epochs", "3", "--store", "/tmp/s"])
    assert (args.augment_on, args.epochs, args.store) == ("decode", 3, "/tmp/s")
    defaults = build_parser().parse_args([])
    assert defaults.epochs == demo_config("").optim.epochs and defaults.augment_on is None
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--augment-on", "gpu"])
