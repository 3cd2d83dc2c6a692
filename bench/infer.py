"""Batch-inference benchmark: the saving of `remove` over `mask` on the same archive, same weights, same job.

The archive is listed and decoded once exactly as `hvt infer` does (``hvt.serve.sources`` + ``decode_input``:
frame-exact, the model's test transform); then the model stage of the job (``BatchScorer``, the one evaluator)
scores the decoded videos in `mask` and in `remove` mode, runs interleaved round-robin so the load of a shared
machine hits both alike (medians). Printed per mode: videos/s of the model stage, end-to-end videos/s (the one
decode pass added), GFLOPs/video as counted (from the tokens each clip kept: equal in both modes, as their outputs
are) and as executed (`mask` pushes every token the Glimpser kept through every block; `remove` spends what it
counts), the speed-up over `mask` and the executed-FLOP ratio.

    python bench/infer.py --quick                 # haltingvt-s-g05-b20 (random weights, calibrated halting)
    python bench/infer.py --model champion --store S --source VIDEOS

Without ``--model`` the weights are random and the halting offset is calibrated (as ``bench/model.py``) so that
``--active-fraction`` of the halting slots stay active. Acceptance: `remove` is at least 0.8 x the FLOP ratio
faster than `mask` in the model stage (exit code 1 otherwise).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hvt.data import DataConfig  # noqa: E402
from hvt.model import create_model  # noqa: E402
from hvt.model.flops import GIGA, model_macs  # noqa: E402
from hvt.model.halting import calibrate_halting_offset  # noqa: E402
from hvt.predict import LoadedModel  # noqa: E402
from hvt.serve.scoring import OK, BatchScorer, ServingModel, decode_input, load_serving_model  # noqa: E402
from hvt.serve.sources import open_source  # noqa: E402

DEFAULT_SOURCE = Path(__file__).resolve().parents[2] / "shared" / "realdata" / "videos"
VARIANT = "haltingvt-s-g05-b20"


def random_serving(variant: str, size: int, active_fraction: float) -> ServingModel:
    """``variant`` with seeded random weights at ``size``^2, halting calibrated on random clips, 8x32x1 test."""
    torch.manual_seed(0)
    network = create_model(variant, img_size=size).eval()
    if network.config.halting:
        calib = torch.rand(2, 3, network.config.num_frames, size, size, generator=torch.Generator().manual_seed(1))
        calibrate_halting_offset(network, calib * 2 - 1, active_fraction, iters=8)
    data = DataConfig(num_frames=network.config.num_frames, test_short_side=size * 256 // 224, crop_size=size,
                      train_short_side=(size * 256 // 224, size * 320 // 224))
    classes = [f"class {i}" for i in range(network.config.num_classes)]
    return ServingModel(LoadedModel(network, classes, data, variant, None, "random"), data, "remove")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--source", default=str(DEFAULT_SOURCE), help="archive (folder, list file, ...) as hvt infer")
    ap.add_argument("--model", default=None, help="NAME[@REF], REF or path (default: random calibrated variant)")
    ap.add_argument("--store", default=None)
    ap.add_argument("--variant", default=VARIANT)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--active-fraction", type=float, default=0.55)
    ap.add_argument("--quick", action="store_true", help="at most 8 videos, batch 4, 2 timed runs")
    ap.add_argument("--videos", type=int, default=None, help="at most this many inputs (default all; quick 8)")
    ap.add_argument("--batch-size", type=int, default=None, help="videos per forward pass (default 8; quick 4)")
    ap.add_argument("--reps", type=int, default=None, help="timed runs per mode (median; default 3, quick 2)")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    limit = args.videos or (8 if args.quick else None)
    batch = args.batch_size or (4 if args.quick else 8)
    reps = args.reps or (2 if args.quick else 3)

    serving = (load_serving_model(args.model, store=args.store, halted_token_mode="remove") if args.model
               else random_serving(args.variant, args.size, args.active_fraction))
    cfg = serving.loaded.network.config
    if not cfg.halting:
        print(f"{serving.loaded.describe()} has no halting: remove and mask are the same model", file=sys.stderr)
        return 2
    print(f"# model {serving.loaded.describe()} ({cfg.name}) threads={torch.get_num_threads()} "
          f"torch={torch.__version__} batch={batch} reps={reps} (median) source={args.source}")

    start = time.perf_counter()
    items, clips, failed = [], [], 0
    for item in open_source(args.source, args.store):
        if limit is not None and len(items) + failed >= limit:
            break
        decoded = decode_input(item, serving.data_config)
        if decoded.status == OK:
            items.append(item)
            clips.append(decoded.clip)
        else:
            failed += 1
    decode_s = time.perf_counter() - start
    if not clips:
        print(f"no decodable video in {args.source}", file=sys.stderr)
        return 2
    print(f"# decoded {len(clips)} videos ({failed} failed, rows with their reason in hvt infer) in {decode_s:.1f} s")

    network = serving.loaded.network
    scorers = {}
    for mode in ("mask", "remove"):
        scorers[mode] = BatchScorer(ServingModel(serving.loaded, serving.data_config, mode), "cpu", 5, batch)
    times: dict[str, list[float]] = {m: [] for m in scorers}
    rows: dict[str, list[dict]] = {}
    for rep in range(reps + 1):  # the first round warms up
        for mode, scorer in scorers.items():
            network.set_halted_token_mode(mode)
            t0 = time.perf_counter()
            rows[mode] = scorer.score(items, clips)
            if rep:
                times[mode].append(time.perf_counter() - t0)
        print(f"# round {rep + 1}/{reps + 1} done", file=sys.stderr)

    views = clips[0].shape[0]
    executed_mask = model_macs(cfg) / GIGA * views  # every token the Glimpser kept, through every block
    table = []
    for mode in scorers:
        sec = statistics.median(times[mode])
        counted = float(np.mean([r["gflops"] for r in rows[mode]]))
        table.append({"mode": mode, "videos": len(items), "model_s": sec, "model_videos_per_s": len(items) / sec,
                      "end_to_end_videos_per_s": len(items) / (sec + decode_s), "gflops_counted": counted,
                      "gflops_executed": executed_mask if mode == "mask" else counted,
                      "top1": [r["top1"] for r in rows[mode]]})
    mask, remove = table
    agree = float(np.mean([a == b for a, b in zip(mask["top1"], remove["top1"], strict=True)]))
    speedup = remove["model_videos_per_s"] / mask["model_videos_per_s"]
    ratio = mask["gflops_executed"] / remove["gflops_executed"]
    print()
    print(f"{'mode':<7} {'videos':>6} {'model v/s':>10} {'e2e v/s':>8} {'GFLOPs/video counted':>21} "
          f"{'executed':>9} {'speed-up':>9} {'FLOP ratio':>10}")
    for r in table:
        s = r["model_videos_per_s"] / mask["model_videos_per_s"]
        f = mask["gflops_executed"] / r["gflops_executed"]
        print(f"{r['mode']:<7} {r['videos']:>6} {r['model_videos_per_s']:>10.3f} {r['end_to_end_videos_per_s']:>8.3f} "
              f"{r['gflops_counted']:>21.3f} {r['gflops_executed']:>9.3f} {s:>8.2f}x {f:>9.2f}x")
    passed = speedup >= 0.8 * ratio
    print(f"\ntop-1 agreement remove vs mask: {agree:.3f}")
    print(f"acceptance (remove vs mask, model stage): speed-up {speedup:.2f}x >= 0.8 x FLOP ratio {ratio:.2f}x = "
          f"{0.8 * ratio:.2f}x: {'PASS' if passed else 'FAIL'}")
    if args.json:
        print(json.dumps([{k: v for k, v in r.items() if k != "top1"} for r in table], indent=2))
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
