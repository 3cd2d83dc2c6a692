"""`hvt evaluate`: evaluate a registered model version on a dataset split."""

from __future__ import annotations

import argparse

from hvt.commands import emit_json
from hvt.commands.model_arg import add_model_argument, resolve_model


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "evaluate", help="top-1/top-5, GFLOPs and halting stats of a registered model",
        description="Evaluate a registered model version on a dataset split: hvt evaluate --model NAME[@REF] "
        "--dataset NAME.",
    )
    add_model_argument(parser, paths=False, dest="model_ref")
    parser.add_argument("model", nargs="?", default=None, metavar="MODEL",
                        help="older form of --model NAME: a registered model name (with --ref)")
    parser.add_argument("--ref", default=None,
                        help="older form of --model NAME@REF: vN, latest or an alias of MODEL (default: champion)")
    parser.add_argument("--store", default=None, help="store URL (default: $HVT_STORE or ./hvt-store)")
    parser.add_argument("--dataset", required=True, help="dataset name in the store")
    parser.add_argument("--dataset-version", default=None, help="dataset version (default: newest)")
    parser.add_argument("--split", default="val", help="dataset split to score")
    parser.add_argument("--batch-size", type=int, default=16, help="clips per forward pass")
    parser.add_argument("--workers", type=int, default=1,
                        help="Ray Train workers; more than 1 evaluates shares of the split in parallel (DDP)")
    parser.add_argument("--cpus-per-worker", type=float, default=1.0, help="CPUs each worker reserves")
    parser.add_argument("--gpu", action="store_true", help="evaluate on the GPU (one per worker), bf16 autocast")
    parser.add_argument("--ray-address", default=None, help="existing Ray cluster (default: start a local Ray)")
    parser.add_argument("--views", default=None, metavar="CLIPSxCROPS",
                        help="test views per video, e.g. 4x3 (clips x crops, crops 1 or 3); scores averaged over "
                             "them (default: the model's data config, usually 1x1)")
    parser.add_argument("--skip-bad-shards", action="store_true",
                        help="leave out shards that fail their manifest check (counted) instead of stopping")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from hvt import storage
    from hvt.config import ScalingSpec
    from hvt.errors import InputError
    from hvt.evaluation.evaluator import parse_views
    from hvt.stages import evaluate_registered

    if args.workers < 1:
        raise InputError(f"--workers {args.workers}: give at least 1")
    if args.views is not None:
        try:
            parse_views(args.views)
        except ValueError as err:
            raise InputError(f"--{err}") from err  # "--views '4x2': ..."
    scaling = ScalingSpec(num_workers=args.workers, cpus_per_worker=args.cpus_per_worker, use_gpu=args.gpu)
    store = storage.resolve_store(args.store)
    if args.model_ref and args.model:
        raise InputError(f"--model {args.model_ref} and MODEL {args.model}: name the model once, with --model "
                         "NAME[@REF]")
    target = resolve_model(args.model_ref, store, legacy_name=args.model, legacy_ref=args.ref, paths=False)

    metrics = evaluate_registered(
        store,
        target.name,
        target.ref,
        dataset_name=args.dataset,
        dataset_version=args.dataset_version,
        split=args.split,
        batch_size=args.batch_size,
        ray_address=args.ray_address,
        scaling=scaling,
        views=args.views,
        skip_bad_shards=args.skip_bad_shards,
    )
    if args.json:
        emit_json(metrics, indent=2)
    else:
        split = args.split
        print(
            f"{metrics['model']} {metrics['version']} on {metrics['eval_set']}: "
            f"top-1 {metrics[f'{split}_top1']:.3f}, top-5 {metrics[f'{split}_top5']:.3f}, "
            f"{metrics.get('gflops_per_video_mean', 0.0):.4f} GFLOPs/video (p90 {metrics.get('gflops_p90', 0.0):.4f}; "
            f"{metrics.get('views', 1)} views of {metrics.get('gflops_per_view_mean', 0.0):.4f}) over "
            f"{metrics.get('clips', 0)} videos on {metrics.get('eval_workers', 1)} worker(s)"
        )
    return 0
