"""`hvt shard`: annotations + raw videos (local or any fsspec URL) -> versioned WebDataset shards in the store.

Also runnable as ``python -m hvt.commands.shard ...`` (same arguments, without the ``shard`` word).
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import TYPE_CHECKING

from hvt.commands import emit_json

if TYPE_CHECKING:
    from hvt.ingest.config import ShardConfig


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--annotations", required=True, help="Kinetics CSV, AR-Net list, S3D id list or mmaction list")
    parser.add_argument("--videos", required=True, help="videos root: folder or URL (s3://bucket/prefix)")
    parser.add_argument("--store", default=None, help="store URL (default $HVT_STORE or ./hvt-store)")
    parser.add_argument("--name", required=True, help="dataset name")
    parser.add_argument(
        "--format", default="auto", choices=["auto", "kinetics_csv", "arnet", "s3d_ids", "mmaction"]
    )
    parser.add_argument("--class-list", default=None, help="class names, one per line (index = line number)")
    parser.add_argument(
        "--labels-csv", action="append", default=[], help="Kinetics CSV labelling an S3D id list (repeatable)"
    )
    parser.add_argument("--split", default=None, help="keep only this split (e.g. val)")
    parser.add_argument("--default-split", default="train", help="split of entries that name none")
    parser.add_argument("--shard-size", type=int, default=1000, help="max samples per shard (default 1000)")
    parser.add_argument("--shard-bytes", type=int, default=None, help="max source bytes per shard")
    parser.add_argument("--workers", type=int, default=1, help="parallel shard writers (default 1)")
    parser.add_argument("--ray-address", default=None, help="write shards as Ray tasks: auto, local or host:port")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--min-frames", type=int, default=8)
    parser.add_argument("--decode-check", choices=["full", "head"], default="full")
    parser.add_argument("--transcode", action="store_true",
                        help="re-encode every video to H.264 mp4 (same as --transcode-policy always)")
    parser.add_argument("--transcode-policy", choices=["always", "needed", "never"], default=None,
                        help="needed (default): re-encode only videos the training decoder would misread or cannot "
                        "decode, and whole videos to cut to their segment; never: quarantine those instead")
    parser.add_argument("--short-side", type=int, default=256, help="re-encoded videos: short side (0 = keep)")
    parser.add_argument("--keyint", type=int, default=1,
                        help="re-encoded videos: keyframe interval in frames (1 = all-intra, the default: fastest "
                        "to decode for training, about 2x the bytes of a keyframe every 8 frames)")
    parser.add_argument("--crf", type=int, default=23, help="re-encoded videos: x264 CRF (quality; lower = better)")
    parser.add_argument("--preset", default="veryfast", help="re-encoded videos: x264 preset")
    parser.add_argument("--frame-checks", type=int, default=6,
                        help="frames compared with the reference decode per video (plus the last two)")
    parser.add_argument("--version", dest="dataset_version", default=None, help="override the derived version id")
    parser.add_argument("--no-reuse", dest="reuse", action="store_false",
                        help="process every video again instead of reusing what earlier versions of this dataset "
                        "stored for an unchanged video (same sha256 and settings); the result is the same")
    parser.add_argument("--retry-quarantined", action="store_true",
                        help="process again the videos an earlier version quarantined (default: repeat its verdict)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.add_argument("--quiet", action="store_true", help="no progress output")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "shard",
        help="shard annotations + videos into versioned WebDataset tars",
        description="Turn annotations plus raw videos into versioned, resumable WebDataset shards in the store.",
    )
    _add_arguments(parser)
    parser.set_defaults(func=run)


def config_from_args(args: argparse.Namespace) -> ShardConfig:
    from hvt.ingest.config import ShardConfig, TranscodeOptions

    transcode = TranscodeOptions(short_side=args.short_side or None, keyint=args.keyint, crf=args.crf,
                                 preset=args.preset)
    policy = args.transcode_policy or ("always" if args.transcode else "needed")
    return ShardConfig(
        annotations=args.annotations,
        videos=args.videos,
        store=args.store,
        name=args.name,
        format=args.format,
        class_list=args.class_list,
        labels_csv=args.labels_csv,
        split=args.split,
        default_split=args.default_split,
        shard_size=args.shard_size,
        shard_bytes=args.shard_bytes,
        workers=args.workers,
        ray_address=args.ray_address,
        seed=args.seed,
        min_frames=args.min_frames,
        decode_check=args.decode_check,
        transcode=transcode,
        transcode_policy=policy,
        frame_checks=args.frame_checks,
        version=args.dataset_version,
        reuse=args.reuse,
        retry_quarantined=args.retry_quarantined,
    )


def run(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from hvt.ingest.annotations import AnnotationError
    from hvt.ingest.shard import ShardingError, shard_dataset
    from hvt.storage import StoreUnavailableError

    try:
        config = config_from_args(args)
    except ValidationError as err:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'config'}: {e['msg']}" for e in err.errors())
        print(f"hvt shard: invalid arguments: {problems}", file=sys.stderr)
        return 2

    def progress(done: int, total: int) -> None:
        if not args.quiet:
            print(f"\rshard: {done}/{total} shards", end="\n" if done == total else "", file=sys.stderr, flush=True)

    try:
        result = shard_dataset(config, progress=progress)
    except StoreUnavailableError as err:
        print(f"hvt shard: {err}", file=sys.stderr)
        return 2
    except (AnnotationError, ShardingError, FileNotFoundError, ValueError) as err:
        print(f"hvt shard: {err}", file=sys.stderr)
        return 1
    if args.json:
        emit_json({"version": result.version, "path": result.path, "counts": result.counts,
                          "manifest_url": result.manifest_url, "shards": result.shards,
                          "shards_written": result.shards_written, "shards_skipped": result.shards_skipped,
                          "processed": result.processed, "reused": result.reused,
                          "reused_quarantined": result.reused_quarantined, "reused_from": result.reused_from},
                  sort_keys=True)
    else:
        counts = result.counts
        print(f"dataset version: {result.path}")
        print(f"entries: {counts['input']}  sharded: {counts['sharded']}  quarantined: {counts['quarantined']}"
              f"  shards: {result.shards} ({result.shards_written} written, {result.shards_skipped} resumed)")
        for reason, n in counts["by_reason"].items():
            print(f"  {reason:<22} {n}")
        origin = f" from {', '.join(result.reused_from)}" if result.reused_from else ""
        print(f"videos: {result.processed} processed, {result.reused} reused{origin}"
              + (f", {result.reused_quarantined} quarantine verdicts repeated" if result.reused_quarantined else ""))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hvt.commands.shard", description=__doc__)
    _add_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
