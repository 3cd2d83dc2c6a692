"""``hvt flops NAME [--frames 8] [--size 224] [--json]``: analytic GFLOPs of a model variant.

Prints the dense Joint VT count of the same backbone and the no-halting upper bound (every token that survives
the Glimpser goes through every block), one multiply-add = one FLOP as in the paper.
"""

from __future__ import annotations

import argparse
import sys

from hvt.commands import emit_json


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "flops",
        help="analytic GFLOPs of a model variant (dense and no-halting bound)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("name", help="model variant, e.g. jointvt-s or haltingvt-s-g05-b20")
    parser.add_argument("--frames", type=int, default=None, help="frames per clip (default: the variant's, 8)")
    parser.add_argument(
        "--size", type=int, default=None, help="frame side in pixels (default: the variant's; 224 for ti/s/b)"
    )
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from hvt.model import flops_summary

    try:
        summary = flops_summary(args.name, num_frames=args.frames, img_size=args.size)
    except (ValueError, TypeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        emit_json(summary, indent=2)
        return 0
    s = summary
    print(f"{s['name']} at {s['num_frames']}x{s['img_size']}^2 "
          f"({s['tokens_in']} tokens in, {s['tokens_after_glimpser']} after the Glimpser)")
    print(f"  dense (Joint VT)  : {s['dense_gflops']:.2f} GFLOPs")
    print(f"  no-halting bound  : {s['no_halting_gflops']:.2f} GFLOPs")
    return 0
