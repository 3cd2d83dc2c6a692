"""`hvt shard`: annotations + raw videos (local or any fsspec URL) -> versioned WebDataset shards in the store.

Also runnable as ``python -m hvt.commands.shard ...`` (same arguments, without the ``shard`` word).
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import TYPE_CHECKING

from hvt.commands import add_config_file_arguments, emit_json, read_config_file
from hvt.commands.defaults import RawDescriptionDefaultsHelpFormatter, config_default, show_default

if TYPE_CHECKING:
    from hvt.ingest.config import ShardConfig


_SHARD_CONFIG = "hvt.ingest.config:ShardConfig"
_TRANSCODE = "hvt.ingest.config:TranscodeOptions"

# flag (argparse dest) -> ShardConfig field: applied when given, shown from the field's default
CONFIG_FLAGS: tuple[tuple[str, str], ...] = (
    ("annotations", "annotations"), ("videos", "videos"), ("store", "store"), ("name", "name"),
    ("format", "format"), ("class_list", "class_list"), ("split", "split"), ("default_split", "default_split"),
    ("shard_size", "shard_size"), ("shard_bytes", "shard_bytes"), ("workers", "workers"),
    ("ray_address", "ray_address"), ("seed", "seed"), ("min_frames", "min_frames"),
    ("decode_check", "decode_check"), ("frame_checks", "frame_checks"), ("dataset_version", "version"),
)
# flag -> TranscodeOptions field
TRANSCODE_FLAGS: tuple[tuple[str, str], ...] = (
    ("short_side", "short_side"), ("keyint", "keyint"), ("crf", "crf"), ("preset", "preset"),
)


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    """`hvt shard`'s flags. Value flags default to None ("not given", so ``--config`` can supply them); their help
    shows the effective default, read from ``ShardConfig`` / ``TranscodeOptions``."""

    def shard_field(action: argparse.Action, field: str) -> None:
        show_default(action, config_default(_SHARD_CONFIG, field))

    def transcode_field(action: argparse.Action, field: str) -> None:
        show_default(action, config_default(_TRANSCODE, field))

    add_config_file_arguments(parser, "ShardConfig", "sharding")
    parser.add_argument("--annotations", default=None,
                        help="Kinetics CSV, AR-Net list, S3D id list or mmaction list (required unless --config "
                        "gives it)")
    parser.add_argument("--videos", default=None,
                        help="videos root: folder or URL, e.g. s3://bucket/prefix (required unless --config gives it)")
    parser.add_argument("--store", default=None, help="store URL (default: $HVT_STORE or ./hvt-store)")
    parser.add_argument("--name", default=None, help="dataset name (required unless --config gives it)")
    shard_field(parser.add_argument("--format", default=None,
                                    choices=["auto", "kinetics_csv", "arnet", "s3d_ids", "mmaction"],
                                    help="annotation format (auto: told from the file)"), "format")
    parser.add_argument("--class-list", default=None,
                        help="class names, one per line, index = line number (default: none: from the annotations)")
    parser.add_argument("--labels-csv", action="append", default=[],
                        help="Kinetics CSV labelling an S3D id list (repeatable; default: none)")
    parser.add_argument("--split", default=None, help="keep only this split, e.g. val (default: every split)")
    shard_field(parser.add_argument("--default-split", default=None, help="split of entries that name none"),
                "default_split")
    shard_field(parser.add_argument("--shard-size", type=int, default=None, help="max samples per shard"),
                "shard_size")
    parser.add_argument("--shard-bytes", type=int, default=None,
                        help="max source bytes per shard (default: no byte limit)")
    shard_field(parser.add_argument("--workers", type=int, default=None, help="parallel shard writers"), "workers")
    parser.add_argument("--ray-address", default=None,
                        help="write shards as Ray tasks: auto, local or host:port (default: local processes)")
    shard_field(parser.add_argument("--seed", type=int, default=None, help="seeds the shard assignment"), "seed")
    shard_field(parser.add_argument("--min-frames", type=int, default=None,
                                    help="quarantine videos with fewer frames as too_short"), "min_frames")
    shard_field(parser.add_argument("--decode-check", choices=["full", "head"], default=None,
                                    help="decode every frame (catches mid-file corruption) or only the first few"),
                "decode_check")
    parser.add_argument("--transcode", action="store_true",
                        help="re-encode every video to H.264 mp4 (same as --transcode-policy always)")
    parser.add_argument("--transcode-policy", choices=["always", "needed", "never"], default=None,
                        help="needed: re-encode only videos the training decoder would misread or cannot decode, "
                        "and whole videos to cut to their segment; never: quarantine those instead (default: "
                        "needed; always with --transcode)")
    transcode_field(parser.add_argument("--short-side", type=int, default=None,
                                        help="re-encoded videos: short side (0 = keep)"), "short_side")
    transcode_field(parser.add_argument("--keyint", type=int, default=None,
                                        help="re-encoded videos: keyframe interval in frames (1 = all-intra: fastest "
                                        "to decode for training, about 2x the bytes of a keyframe every 8 frames)"),
                    "keyint")
    transcode_field(parser.add_argument("--crf", type=int, default=None,
                                        help="re-encoded videos: x264 CRF (quality; lower = better)"), "crf")
    transcode_field(parser.add_argument("--preset", default=None, help="re-encoded videos: x264 preset"), "preset")
    shard_field(parser.add_argument("--frame-checks", type=int, default=None,
                                    help="frames compared with the reference decode per video (plus the last two)"),
                "frame_checks")
    parser.add_argument("--version", dest="dataset_version", default=None,
                        help="the version id to write (default: derived from the inputs and settings)")
    parser.add_argument("--no-reuse", dest="reuse", action="store_false", default=None,
                        help="process every video again instead of reusing what earlier versions of this dataset "
                        "stored for an unchanged video (same sha256 and settings); the result is the same")
    parser.add_argument("--retry-quarantined", action="store_true", default=None,
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
    """The ``ShardConfig`` of ``--config`` (if given) with the flags given applied; InputError names what is
    missing or malformed, pydantic's ValidationError what is out of range."""

    from hvt.errors import InputError
    from hvt.ingest.config import ShardConfig

    base = read_config_file(getattr(args, "config", None), "shard")
    for flag, field in CONFIG_FLAGS:
        value = getattr(args, flag, None)
        if value is not None:
            base[field] = value
    if args.labels_csv:
        base["labels_csv"] = list(args.labels_csv)
    for flag in ("reuse", "retry_quarantined"):
        if getattr(args, flag, None) is not None:
            base[flag] = getattr(args, flag)
    # re-encoding options are always recorded (they are part of the version id), the flags given over the file's
    transcode = dict(base.get("transcode") or {})
    for flag, field in TRANSCODE_FLAGS:
        value = getattr(args, flag, None)
        if value is not None:
            transcode[field] = (value or None) if field == "short_side" else value  # 0 = keep the size
    base["transcode"] = transcode
    if args.transcode_policy:
        base["transcode_policy"] = args.transcode_policy
    elif args.transcode:
        base["transcode_policy"] = "always"
    elif base.get("transcode_policy") is None:
        base["transcode_policy"] = "needed"
    missing = [f"--{flag}" for flag in ("annotations", "videos", "name") if not base.get(flag)]
    if missing:
        raise InputError(f"{', '.join(missing)}: required; give {'it' if len(missing) == 1 else 'them'} as flags or "
                         "in --config")
    return ShardConfig.model_validate(base)


def run(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from hvt.errors import InputError
    from hvt.ingest.annotations import AnnotationError
    from hvt.ingest.shard import ShardingError, shard_dataset
    from hvt.storage import StoreUnavailableError

    try:
        config = config_from_args(args)
    except ValidationError as err:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'config'}: {e['msg']}" for e in err.errors())
        print(f"hvt shard: invalid arguments: {problems}", file=sys.stderr)
        return 2
    except InputError as err:
        print(f"hvt shard: error: {err}", file=sys.stderr)
        return 2
    if args.print_config:
        emit_json(config.model_dump(mode="json"), indent=2)
        return 0

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
    parser = argparse.ArgumentParser(prog="python -m hvt.commands.shard", description=__doc__,
                                     formatter_class=RawDescriptionDefaultsHelpFormatter)
    _add_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
