"""`hvt synth OUT_DIR`: write the synthetic motion dataset (real H.264 clips + Kinetics-style CSV)."""

from __future__ import annotations

import argparse
import inspect
import sys
from typing import Any

from hvt.commands.defaults import show_default
from hvt.ingest.synthetic import MOTION_CLASSES


def parse_size(text: str) -> tuple[int, int]:
    """``"112x112"`` -> ``(112, 112)``; an argparse type, so bad input becomes a usage error."""
    parts = text.lower().split("x")
    if len(parts) != 2 or not all(p.strip().isdigit() for p in parts):
        raise argparse.ArgumentTypeError(f"expected WxH (e.g. 112x112), got {text!r}")
    width, height = (int(p) for p in parts)
    if width < 32 or height < 32 or width % 2 or height % 2:
        raise argparse.ArgumentTypeError(f"expected WxH with even sides of at least 32, got {text!r}")
    return width, height


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _library_defaults() -> dict[str, Any]:
    """``make_synthetic_dataset``'s keyword defaults: the flags' defaults are the library's, not a copy."""
    from hvt.ingest.synthetic import make_synthetic_dataset

    return {name: p.default for name, p in inspect.signature(make_synthetic_dataset).parameters.items()
            if p.default is not inspect.Parameter.empty}


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "synth",
        help="write a synthetic motion dataset (class visible only from motion)",
        description="Write H.264 clips whose class can only be told from motion, plus annotations.csv "
        "(Kinetics form) and classes.txt.",
    )
    parser.add_argument("out_dir", metavar="OUT_DIR", help="folder or fsspec URL to write into")
    defaults = _library_defaults()
    parser.add_argument("--classes", type=_positive, default=defaults["classes"],
                        help=f"number of motion classes, 1-{len(MOTION_CLASSES)}")
    parser.add_argument("--per-class", type=_positive, default=defaults["per_class"], help="clips per class")
    parser.add_argument("--seed", type=int, default=defaults["seed"], help="same seed, same bytes")
    parser.add_argument("--frames", type=_positive, default=defaults["frames"], help="frames per clip")
    width, height = defaults["size"]
    show_default(parser.add_argument("--size", type=parse_size, default=defaults["size"], metavar="WxH",
                                     help="frame size"), f"{width}x{height}")
    parser.add_argument("--fps", type=_positive, default=defaults["fps"], help="frame rate")
    parser.add_argument("--val-fraction", type=float, default=defaults["val_fraction"],
                        help="share of each class in val")
    parser.add_argument("--workers", type=_positive, default=defaults["workers"], help="encoding processes")
    parser.add_argument("--quiet", action="store_true", help="no progress output")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if not 1 <= args.classes <= len(MOTION_CLASSES):
        print(f"hvt synth: --classes must be between 1 and {len(MOTION_CLASSES)}", file=sys.stderr)
        return 2
    from hvt.ingest.synthetic import make_synthetic_dataset

    def progress(done: int, total: int) -> None:
        if not args.quiet and (done == total or done % 10 == 0):
            print(f"\rsynth: {done}/{total} clips", end="\n" if done == total else "", file=sys.stderr, flush=True)

    try:
        dataset = make_synthetic_dataset(
            args.out_dir,
            classes=args.classes,
            per_class=args.per_class,
            seed=args.seed,
            frames=args.frames,
            size=args.size,
            fps=args.fps,
            val_fraction=args.val_fraction,
            progress=progress,
            workers=args.workers,
        )
    except (ValueError, OSError) as err:
        print(f"hvt synth: {err}", file=sys.stderr)
        return 1
    print(f"wrote {dataset.num_videos} clips of {len(dataset.class_names)} classes to {dataset.root}")
    print(f"annotations: {dataset.annotations_csv}")
    print(f"classes:     {dataset.classes_txt}")
    return 0
