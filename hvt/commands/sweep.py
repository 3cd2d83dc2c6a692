"""`hvt sweep`: Ray Tune over keep rate, halting centre, ponder weight and lr; the accuracy-GFLOPs Pareto front."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from hvt.commands import emit_json
from hvt.commands.defaults import config_default, show_default
from hvt.commands.train import (
    add_train_config_arguments,
    print_config,
    train_config_from_args,
    validation_summary,
)
from hvt.errors import InputError

if TYPE_CHECKING:
    from hvt.tune.space import SweepConfig

_SWEEP_CONFIG = "hvt.tune.space:SweepConfig"


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "sweep", help="Ray Tune over keep rate / halting centre / ponder weight / lr: the Pareto front of val "
        "top-1 vs GFLOPs, its points registered, a budget's pick put up for champion")
    add_train_config_arguments(parser)
    parser.add_argument("--grid", action="append", default=[], metavar="KEY=V1,V2",
                        help="search-space values (repeatable); KEY: keep_rate (last Glimpser block), beta (halting "
                        "centre), ponder_weight, lr (default: the paper's four variants G0.3-B5, G0.3-B10, G0.5-B20, "
                        "G0.7-B20)")
    show_default(parser.add_argument("--search", choices=["grid", "random"], default=None,
                                     help="grid: every combination; random: --num-samples draws of them"),
                 config_default(_SWEEP_CONFIG, "search"))
    show_default(parser.add_argument("--num-samples", type=int, default=None, help="trials of a random search"),
                 config_default(_SWEEP_CONFIG, "num_samples"))
    show_default(parser.add_argument("--max-concurrent", type=int, default=None,
                                     help="trials training at the same time"),
                 config_default(_SWEEP_CONFIG, "max_concurrent"))
    show_default(parser.add_argument("--grace-epochs", type=int, default=None,
                                     help="epochs each trial trains before ASHA may stop it early"),
                 config_default(_SWEEP_CONFIG, "grace_epochs"))
    parser.add_argument("--no-early-stop", action="store_true", help="train every trial to the end (no ASHA)")
    parser.add_argument("--budget-gflops", type=float, default=None, metavar="G",
                        help="the most accurate front point within G GFLOPs per clip is the candidate for champion "
                        "(through the promotion policy) (default: none: the most accurate front point)")
    parser.add_argument("--no-register-front", action="store_true",
                        help="do not register the front points (default: each is registered as a version)")
    parser.add_argument("--sweep-name", default=None,
                        help="name of the sweep (default: derived from its settings, so a re-run resumes it)")
    parser.add_argument("--json", action="store_true", help="machine-readable summary")
    parser.set_defaults(func=run)


def sweep_config_from_args(args: argparse.Namespace) -> SweepConfig:
    """The ``SweepConfig`` of the command line: the training flags make the base config, --grid the space."""
    from pydantic import ValidationError

    from hvt.commands import read_config_file
    from hvt.tune.space import SweepConfig, parse_grid

    # --config: a SweepConfig (what --print-config prints) or just the TrainConfig every trial starts from
    loaded = read_config_file(args.config, "sweep")
    values: dict[str, Any] = dict(loaded) if "base" in loaded else {"base": loaded}
    if not isinstance(values["base"], dict):
        raise InputError(f"--config {args.config}: 'base' must be a JSON object (a TrainConfig)")
    values["base"] = train_config_from_args(args, dict(values["base"]))
    grid = parse_grid(args.grid)
    if grid:
        values["grid"] = grid
    for flag, key in (("search", "search"), ("num_samples", "num_samples"), ("max_concurrent", "max_concurrent"),
                      ("grace_epochs", "grace_epochs"), ("budget_gflops", "budget_gflops"),
                      ("sweep_name", "name")):
        if getattr(args, flag) is not None:
            values[key] = getattr(args, flag)
    if args.no_early_stop:
        values["early_stop"] = False
    if args.no_register_front:
        values["register_front"] = False
    try:
        return SweepConfig.model_validate(values)
    except ValidationError as err:
        raise InputError(f"invalid sweep: {validation_summary(err)}") from err


def run(args: argparse.Namespace) -> int:
    sweep = sweep_config_from_args(args)
    if args.print_config:
        print_config(sweep)
        return 0
    from hvt.tune.pareto import front_table
    from hvt.tune.sweep import PLOT, run_sweep

    result = run_sweep(sweep)
    if args.json:
        emit_json(result.as_dict(), indent=2)
        return 0
    print(f"sweep {result.name}: {len(result.points)} trials, front of {len(result.front)}")
    print(front_table(result.front, result.picked, result.versions) if result.front else "no evaluated trial")
    if result.picked is not None:
        print(f"pick: {result.picked.trial} ({result.picked.label}): {result.promotion}")
    else:
        print("no front point fits the budget: no candidate for champion")
    print(f"plot: {result.path}/{PLOT}")
    return 0
