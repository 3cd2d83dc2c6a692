"""`hvt predict VIDEO`: top-5 classes of one video and the GFLOPs the model spent on it."""

from __future__ import annotations

import argparse

from hvt.commands import emit_json
from hvt.commands.model_arg import add_model_argument, resolve_model


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("predict", help="classify one video: top-5 classes and GFLOPs spent")
    parser.add_argument("video", help="video file (local path or fsspec URL)")
    add_model_argument(parser, paths=True)
    parser.add_argument("--store", default=None, help="store URL (default: $HVT_STORE or ./hvt-store)")
    parser.add_argument("--registry-name", default=None, metavar="NAME",
                        help="older form of --model NAME@REF: the registered model, with --model as its REF "
                        "(default: none)")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from hvt import storage
    from hvt.predict import predict_video

    store = storage.resolve_store(args.store)
    target = resolve_model(args.model, store, legacy_name=args.registry_name)
    if target.path:
        prediction = predict_video(args.video, model=target.path)
    else:
        prediction = predict_video(args.video, model=target.ref, store=store, registry_name=target.name)
    if args.json:
        emit_json(prediction.as_dict(), indent=2)
        return 0
    model = f"{prediction.model} {prediction.version}" if prediction.version else prediction.model
    views = f" over {prediction.views} views" if prediction.views > 1 else ""
    print(f"{prediction.video}")
    print(f"model {model}: {prediction.gflops:.4f} GFLOPs spent on this clip{views}")
    width = max(len(p.label) for p in prediction.top5)
    for rank, item in enumerate(prediction.top5, 1):
        print(f"  {rank}. {item.label:<{width}}  {100 * item.prob:5.1f}%")
    return 0
