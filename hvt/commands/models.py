"""`hvt models`: the model variants `hvt train --model` builds, how their names read, which are the paper's."""

from __future__ import annotations

import argparse
from typing import Any

from hvt.commands import emit_json


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "models",
        help="list the model variants (names explained; the paper's marked)",
        description="List the model variants of the zoo (hvt.model.zoo) with their backbone, Glimpser keep rate "
        "and halting centre; the paper's variants are marked, and the one `hvt train` builds by default.",
    )
    parser.add_argument("--paper", action="store_true", help="only the paper's variants")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.set_defaults(func=run)


def model_rows(paper_only: bool = False) -> list[dict[str, Any]]:
    """One row per variant: name, size, width, depth, keep rate (None: no Glimpser), beta (None: no halting),
    and whether it is one of the paper's variants or `hvt train`'s default."""
    from hvt.commands.defaults import field_default
    from hvt.config import ModelSpec
    from hvt.model.zoo import PAPER_VARIANTS, get_config, list_models

    default = field_default(ModelSpec, "name")
    rows = []
    for name in list_models():
        if paper_only and name not in PAPER_VARIANTS:
            continue
        cfg = get_config(name)
        rows.append({
            "name": name,
            "size": name.split("-")[1],
            "width": cfg.embed_dim,
            "depth": cfg.depth,
            "keep_rate": cfg.keep_rate[-1] if cfg.keep_rate else None,
            "beta": cfg.halt_center if cfg.halting else None,
            "paper": name in PAPER_VARIANTS,
            "default": name == default,
        })
    return rows


def run(args: argparse.Namespace) -> int:
    from hvt.model.zoo import NAMING

    rows = model_rows(args.paper)
    if args.json:
        emit_json({"naming": NAMING, "models": rows}, indent=2)
        return 0
    print(NAMING)
    print()
    width = max(len(row["name"]) for row in rows)
    print(f"{'name':<{width}}  {'width':>5}  {'depth':>5}  {'keep':>4}  {'beta':>4}")
    for row in rows:
        keep = f"{row['keep_rate']:.1f}" if row["keep_rate"] is not None else "-"
        beta = f"{row['beta']:g}" if row["beta"] is not None else "-"
        marks = ", ".join(mark for mark, on in (("paper", row["paper"]), ("hvt train default", row["default"]))
                          if on)
        print(f"{row['name']:<{width}}  {row['width']:>5}  {row['depth']:>5}  {keep:>4}  {beta:>4}"
              + (f"  ({marks})" if marks else ""))
    return 0
