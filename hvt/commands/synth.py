"""`hvt synth OUT_DIR`: write the synthetic motion dataset (real H.264 clips + Kinetics-style CSV)."""

from __future__ import annotations

import argparse
import sys

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


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "synth",
        help="write a synthetic motion dataset (class visible only from motion)",
        description="Write H.264 clips whose class can only be told from motion, plus annotations.csv "
        "(Kinetics form) and classes.txt.",
    )
    parser.add_argument("out_dir", metavar="OUT_DIR", help="folder or fsspec URL to write into")
    parser.add_argument(
        "--classes",
        type=_positive,
        default=4,
        help=f"number of motion classes, 1-{len(MOTION_CLASSES)} (default 4)",
    )
    parser.add_argument("--per-class", type=_positive, default=40, help="clips per class (default 40)")
    parser.add_argument("--seed", type=int, default=0, help="same seed, same bytes (default 0)")
    parser.add_argument("--frames", type=_positive, default=32, help="frames per clip (default 32)")
    parser.add_argument("--size", type=parse_size, default=(112, 112), help="WxH (default 112x112)")
    parser.add_argument("--fps", type=_positive, default=8, help="frame rate (default 8)")
    parser.add_argument("--val-fraction", type=float, default=0.25, help="share of each class in val")
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
        )
    except (ValueError, OSError) as err:
        print(f"hvt synth: {err}", file=sys.stderr)
        return 1
    print(f"wrote {dataset.num_videos} clips of {len(dataset.class_names)} classes to {dataset.root}")
    print(f"annotations: {dataset.annotations_csv}")
    print(f"classes:     {dataset.classes_txt}")
    return 0
