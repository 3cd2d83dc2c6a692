"""`hvt browse`: see what the model sees — samples of a dataset split decoded through the training-time path."""

from __future__ import annotations

import argparse

from hvt.commands import emit_json
from hvt.errors import InputError


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "browse", help="write the clips the model sees (PNG contact sheets + NPZ) for samples of a dataset",
        description="Decode samples of a dataset split exactly as training does and write DIR/<key>.png (contact "
        "sheet) and DIR/<key>.npz (clip, frame_indices).",
    )
    parser.add_argument("--store", default=None, help="store URL (default: $HVT_STORE or ./hvt-store)")
    parser.add_argument("--dataset", required=True, help="dataset name in the store")
    parser.add_argument("--version", dest="dataset_version", default=None, help="dataset version (default: newest)")
    parser.add_argument("--split", default=None, help="split (default: train with --train, else val; else the first)")
    parser.add_argument("--train", action="store_true", help="the training transform (random crop, RandAugment...)")
    parser.add_argument("--limit", type=int, default=None, help="at most this many samples (default: all)")
    parser.add_argument("--epoch", type=int, default=0, help="with --train: the training epoch whose draws to show")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--config", default=None, help="TrainConfig JSON whose data settings to use (default: defaults)")
    parser.add_argument("--sampling", default=None,
                        help="override the sampling, e.g. 8x32x1 (default: --config's, else DataConfig's)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.set_defaults(func=run)


def _data_config(args: argparse.Namespace):
    from pydantic import ValidationError

    from hvt.config import TrainConfig
    from hvt.data import DataConfig
    from hvt.storage import read_bytes

    try:
        config = TrainConfig.model_validate_json(read_bytes(args.config)).data if args.config else DataConfig()
        if args.sampling:
            config = DataConfig.for_sampling(args.sampling, **config.model_dump(
                exclude={"num_frames", "frame_interval", "num_clips"}))
    except ValidationError as err:
        first = err.errors()[0]
        raise InputError(f"--config {args.config}: {'.'.join(map(str, first['loc']))}: {first['msg']}") from None
    except ValueError as err:
        raise InputError(" ".join(str(err).split())) from None
    return config


def run(args: argparse.Namespace) -> int:
    from hvt import storage
    from hvt.data.browse import browse_report, browse_samples
    from hvt.ingest.versions import latest_dataset_version, version_path

    if args.limit is not None and args.limit < 0:
        raise InputError(f"--limit {args.limit}: give 0 or more")
    config = _data_config(args)
    store = storage.resolve_store(args.store)
    if args.dataset_version:
        path = version_path(store, args.dataset, args.dataset_version)
        if not storage.exists(storage.join(path, "manifest.json")):
            raise InputError(f"dataset {args.dataset!r} has no version {args.dataset_version!r} in {store} "
                             f"(the versions are the folders under {store}/datasets/{args.dataset})")
    else:
        latest = latest_dataset_version(store, args.dataset)
        if latest is None:
            raise InputError(f"dataset {args.dataset!r} has no committed version in {store}: shard it first "
                             f"(`hvt shard ... --name {args.dataset}`)")
        path = latest.path
    splits = sorted(storage.read_json(storage.join(path, "manifest.json")).get("splits", {}))
    split = args.split or next((s for s in ("train" if args.train else "val",) if s in splits),
                               splits[0] if splits else None)
    if split not in splits:
        raise InputError(f"split {split!r} not in dataset {args.dataset!r} at {path}; it has: "
                         f"{', '.join(splits) or 'none'}")
    browsed, failures = browse_samples(path, split, args.out, config, training=args.train, limit=args.limit,
                                       epoch=args.epoch)
    if args.json:
        emit_json(browse_report(browsed, failures))
    else:
        print(f"{path} split {split}: {len(browsed)} samples ({config.sampling}, "
              f"{'train' if args.train else 'test'} transform) -> {args.out}; {failures} failed to decode")
        for b in browsed:
            status = f"frames {b.frame_indices}" if b.decode_ok else f"DECODE FAILED: {b.error}"
            print(f"  {b.key}  {b.label_name}  {status}")
    return 0 if not failures or browsed else 1

