"""`hvt infer SOURCE --model REF --out PATH`: a model over a video archive -> Parquet, one row per input video."""

from __future__ import annotations

import argparse

from hvt.commands import emit_json
from hvt.commands.model_arg import add_model_argument, resolve_model


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "infer", help="batch inference over a video archive -> Parquet (one row per video; resumable)",
        description=(
            "Classify every video of SOURCE (a folder, recursively; an s3:// prefix; a text file with one path a "
            "line; or dataset:NAME[@VERSION]/SPLIT) and write one Parquet row per input: top-k labels and "
            "probabilities, GFLOPs per view and per video, mean halting depth, decode status and reason. Output "
            "is written in parts, each whole or not at all: re-running a killed job finishes the missing parts."
        ),
    )
    parser.add_argument("source", help="folder, s3:// prefix, list file, or dataset:NAME[@VERSION]/SPLIT")
    add_model_argument(parser, paths=True)
    parser.add_argument("--store", default=None, help="store URL (default: $HVT_STORE or ./hvt-store)")
    parser.add_argument("--out", required=True, help="output folder of Parquet parts, or a single .parquet file")
    parser.add_argument("--views", default=None, help="test views CLIPSxCROPS, e.g. 4x3 (default: the model's data config)")
    parser.add_argument("--top-k", type=int, default=5, help="classes kept per video (default: 5)")
    parser.add_argument("--halted-token-mode", choices=("official", "mask", "remove"), default=None,
                        help="how halted tokens are treated (default: remove for this project's models, official "
                        "for imported released weights)")
    parser.add_argument("--batch-size", type=int, default=8, help="videos per forward pass (default: 8)")
    parser.add_argument("--part-size", type=int, default=256, help="videos per Parquet part (default: 256)")
    parser.add_argument("--gpu", action="store_true", help="one model actor per GPU, bf16")
    parser.add_argument("--local", action="store_true",
                        help="run in this process without Ray (decode one video after another)")
    parser.add_argument("--overwrite", action="store_true", help="delete what --out holds and start over")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from hvt import storage
    from hvt.errors import InputError
    from hvt.serve.infer import InferConfig, run_infer

    store = storage.resolve_store(args.store)
    model = str(resolve_model(args.model, store))
    try:
        config = InferConfig(
            source=args.source, out=args.out, model=model, store=store, views=args.views,
            top_k=args.top_k, halted_token_mode=args.halted_token_mode, batch_size=args.batch_size,
            part_size=args.part_size, gpu=args.gpu, executor="local" if args.local else "ray",
            overwrite=args.overwrite,
        )
    except ValidationError as err:
        first = err.errors()[0]
        raise InputError(f"--{str(first['loc'][0]).replace('_', '-')}: {first['msg']}") from None
    summary = run_infer(config)
    if args.json:
        emit_json(summary, indent=2)
        return 0
    model = f"{summary['model']} {summary['version']}" if summary["version"] else summary["model"]
    print(f"{summary['videos']} videos -> {summary['out']} ({model}, {summary['halted_token_mode']} mode, "
          f"views {summary['views']})")
    print(f"  classified {summary['ok']}, failed {summary['failures']} {summary['failures_by_status'] or ''}")
    print(f"  {summary['videos_per_s']:.2f} videos/s over {summary['videos_computed']} computed "
          f"({summary['parts_skipped']} of {summary['parts']} parts already done), "
          f"{summary['mean_gflops_per_video']:.4f} GFLOPs/video, wall {summary['wall_s']:.1f} s")
    return 0
