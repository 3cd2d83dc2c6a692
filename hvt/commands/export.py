"""`hvt export --model REF --format onnx|torch-export --out PATH`: a self-contained serving artefact."""

from __future__ import annotations

import argparse

from hvt.commands import emit_json
from hvt.commands.model_arg import add_model_argument, resolve_model


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "export", help="export a model for serving (ONNX or torch.export) with classes, input spec and GFLOPs",
    )
    add_model_argument(parser, paths=True)
    parser.add_argument("--store", default=None, help="store URL (default: $HVT_STORE or ./hvt-store)")
    parser.add_argument("--format", required=True, choices=("onnx", "torch-export"), help="artefact format")
    parser.add_argument("--out", required=True, help="output file (.onnx or .pt2)")
    parser.add_argument("--halted-token-mode", choices=("official", "mask", "remove"), default=None,
                        help="how halted tokens are treated (default: mask for onnx, remove for torch-export; "
                        "imported released weights keep official)")
    parser.add_argument("--check", default=None, metavar="VIDEO_OR_FOLDER",
                        help="check parity against eager on up to 4 videos of this folder, list file or video "
                        "(default: seeded random clips)")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from hvt import storage
    from hvt.serve.export import export_model

    store = storage.resolve_store(args.store)
    result = export_model(str(resolve_model(args.model, store)), store=store, fmt=args.format, out=args.out,
                          halted_token_mode=args.halted_token_mode, check=args.check)
    if args.json:
        emit_json(result, indent=2)
        return 0
    print(f"{result['format']} artefact {result['out']} ({result['model']}, {result['halted_token_mode']} mode)")
    print(f"  parity on {result['parity']['clips']} clips ({result['parity']['inputs']}): max |logit diff| "
          f"{result['parity']['max_abs_logit_diff']:.2e}, max |GFLOPs diff| {result['parity']['max_abs_gflops_diff']:.2e}")
    return 0
