"""Learning benchmark: HaltingVT vs the dense Joint VT baseline, trained from scratch on the synthetic motion set.

Every variant trains with the project's own loop (``hvt.train.loop.train_one_epoch``, the loss, optimiser and
schedule Ray Train runs) on exactly the same clips in the same order: the train views of every epoch (random
temporal offset, scale jitter and crop, plus the static fake of each clip) are decoded once, with the project's
decoder, and shared. Evaluation is the test transform over the val split with ``ClipMetrics`` (torchmetrics);
GFLOPs are per clip as spent (tokens each clip kept at each block).

Rows (``--size micro`` by default, 64x64 crops, 8 frames, the demo's recipe unless a row says otherwise; the
default ``--lr`` is 1e-3, the rate of the figures in docs/BENCHMARKS.md, while the demo now trains at 5e-4):

* ``dense``        jointvt-<size>: every block sees every token (the baseline)
* ``halting``      haltingvt-<size>-g05-b10 (the demo's model)
* ``keep 0.3/0.7`` the Glimpser keep rate (g03 / g07, beta 10)
* ``beta 5/20``    the halting threshold centre (g05, b5 / b20)
* ``no motion``    g05-b10 without the motion loss (and so without static fake clips)
* ``g03 beta 5``   keep rate 0.3 with beta 5
* ``g03 pond x4``  keep rate 0.3, beta 10, the ponder loss weighted 4x (``OptimConfig.ponder_weight_scale``)

    python bench/learn.py              # all rows, 20 epochs (~20 min on 2 CPU cores)
    python bench/learn.py --quick      # dense + halting, 8 epochs
    python bench/learn.py --size ti --device cuda   # the DeiT-Ti-sized pair, on a GPU
    python bench/learn.py --only "keep 0.3" --augment-on decode   # augmentation placed on the decode side

Prints one table (val top-1 / top-5 of the last epoch, best val top-1 over epochs, mean GFLOPs per val clip,
GFLOPs as a fraction of the dense row, train minutes) and the acceptance line: the halting row's val top-1 and
its GFLOPs ratio against the dense row.
"""

from __future__ import annotations

import argparse
import csv
import json
import platform
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hvt.config import ModelSpec, OptimConfig, TrainConfig  # noqa: E402
from hvt.data import DataConfig  # noqa: E402
from hvt.data.decode import DecodeClips  # noqa: E402
from hvt.evaluation.evaluate import evaluate_batches  # noqa: E402
from hvt.evaluation.evaluator import Evaluator  # noqa: E402
from hvt.evaluation.metrics import ClipMetrics  # noqa: E402
from hvt.ingest.synthetic import make_synthetic_dataset  # noqa: E402
from hvt.model import create_model  # noqa: E402
from hvt.train.loop import make_optimization, seed_everything, train_one_epoch  # noqa: E402

ACCEPT_TOP1 = 0.90
ACCEPT_GFLOPS_RATIO = 0.50


@dataclass(frozen=True)
class Row:
    label: str
    model: str
    motion_loss: bool = True
    ponder_scale: float = 1.0


def rows_for(size: str, quick: bool) -> list[Row]:
    rows = [Row("dense", f"jointvt-{size}"), Row("halting", f"haltingvt-{size}-g05-b10")]
    if quick:
        return rows
    return rows + [
        Row("keep 0.3", f"haltingvt-{size}-g03-b10"),
        Row("keep 0.7", f"haltingvt-{size}-g07-b10"),
        Row("beta 5", f"haltingvt-{size}-g05-b5"),
        Row("beta 20", f"haltingvt-{size}-g05-b20"),
        Row("no motion", f"haltingvt-{size}-g05-b10", motion_loss=False),
        Row("g03 beta 5", f"haltingvt-{size}-g03-b5"),
        Row("g03 pond x4", f"haltingvt-{size}-g03-b10", ponder_scale=4.0),
    ]


def train_config(row: Row, args: argparse.Namespace, seed: int) -> TrainConfig:
    """The demo's recipe (pipelines.demo.demo_config) in one process: the demo's 2 workers x 8 clips = 16 a step."""
    return TrainConfig(
        store="/tmp/unused-by-bench",
        dataset_name="synthetic-motion",
        model=ModelSpec(name=row.model, overrides={"img_size": args.crop, "patch_size": 16, "drop_path_rate": 0.0}),
        data=data_config(args, static_clips=row.motion_loss),
        optim=OptimConfig(optimizer="adamw", lr=args.lr, weight_decay=0.05, epochs=args.epochs, warmup_epochs=1,
                          batch_size=args.batch_size, static_class_loss_weight=0.0,
                          motion_loss_weight=1.0 if row.motion_loss else 0.0, ponder_weight_scale=row.ponder_scale),
        seed=seed,
    )


def data_config(args: argparse.Namespace, static_clips: bool = True) -> DataConfig:
    return DataConfig(num_frames=args.frames, frame_interval=args.interval,
                      train_short_side=(args.crop, args.crop + args.crop // 8), test_short_side=args.crop,
                      crop_size=args.crop, randaugment=args.randaugment, flip=False, static_clips=static_clips,
                      augment_on=args.augment_on)


def read_split(root: Path) -> dict[str, tuple[list[bytes], np.ndarray]]:
    """``{split: (video bytes, labels)}`` from the synthetic set's annotations.csv and classes.txt."""
    classes = (root / "classes.txt").read_text().splitlines()
    index = {name: i for i, name in enumerate(classes)}
    splits: dict[str, tuple[list[bytes], list[int]]] = {"train": ([], []), "val": ([], [])}
    with open(root / "annotations.csv", newline="") as f:
        for rec in csv.DictReader(f):
            name = f"{rec['youtube_id']}_{int(rec['time_start']):06d}_{int(rec['time_end']):06d}.mp4"
            videos, labels = splits[rec["split"]]
            videos.append((root / "videos" / name).read_bytes())
            labels.append(index[rec["label"]])
    return {split: (videos, np.asarray(labels, np.int64)) for split, (videos, labels) in splits.items()}


def decode_views(videos: list[bytes], labels: np.ndarray, config: DataConfig, training: bool, nonce: int) -> dict:
    decoder = DecodeClips(config, training=training, rng_nonce=nonce)
    keys = np.asarray([f"clip{i}" for i in range(len(videos))], dtype=object)
    out = decoder({"key": keys, "video": np.asarray(videos, dtype=object), "label": labels})
    if not out["decode_ok"].all():
        raise RuntimeError(f"{int((~out['decode_ok']).sum())} synthetic clips failed to decode")
    return out


def epoch_batches(views: dict, order: np.ndarray, batch_size: int, with_static: bool):
    """Batches of the decoded train views in ``order``: finished clips (augment_on=decode) or frames plus drawn
    parameters (augment_on=device: ``train_one_epoch`` augments them, as on the training device)."""
    static_columns = {"static_clip", "static_frame", "static_aug"}
    columns = [c for c in views if c != "key" and (with_static or c not in static_columns)]
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        yield {c: torch.from_numpy(np.ascontiguousarray(views[c][idx])) for c in columns}


def evaluate(model: torch.nn.Module, val: dict, num_classes: int, device: torch.device) -> dict:
    """Val metrics with the project's one evaluator (same precision and view averaging as `hvt evaluate`)."""
    metrics = ClipMetrics(num_classes, device=device)
    batches = ({"clip": torch.from_numpy(val["clip"][start:start + 32]),
                "label": torch.from_numpy(val["label"][start:start + 32]),
                "decode_ok": torch.from_numpy(val["decode_ok"][start:start + 32])}
               for start in range(0, len(val["label"]), 32))
    evaluate_batches(Evaluator(model, device), batches, metrics)
    model.train()
    return metrics.compute()


def train_row(row: Row, args, seed: int, epochs_views: list[dict], val: dict, num_classes: int, device) -> dict:
    """Train one row with one seed (model init and batch order) on the shared views; its final metrics."""
    cfg = train_config(row, args, seed)
    seed_everything(cfg.seed)
    model = create_model(cfg.model.name, num_classes=num_classes, **cfg.model_overrides()).to(device)
    n_train = len(epochs_views[0]["label"])
    steps_per_epoch = -(-n_train // cfg.optim.batch_size)
    optimizer, scheduler = make_optimization(model, cfg, steps_per_epoch)
    order_rng = np.random.default_rng(seed)
    best, started, history = 0.0, time.perf_counter(), []
    for epoch, views in enumerate(epochs_views):
        order = order_rng.permutation(n_train)
        stats = train_one_epoch(model, epoch_batches(views, order, cfg.optim.batch_size, row.motion_loss),
                                optimizer, scheduler, cfg, device, with_static=row.motion_loss)
        result = evaluate(model, val, num_classes, device)
        best = max(best, result["top1"])
        history.append(round(result["top1"], 3))
        print(f"  {row.label:<11} seed {seed} epoch {epoch + 1:>2}/{len(epochs_views)}  loss {stats.sums['loss'] / stats.seen:.3f}"
              f"  val top-1 {result['top1']:.3f}  GFLOPs {result['gflops_mean']:.4f}", flush=True)
    return {"row": row.label, "model": row.model, "motion_loss": row.motion_loss, "seed": seed,
            "val_top1": result["top1"],
            "val_top5": result["top5"], "best_val_top1": best, "gflops_mean": result["gflops_mean"],
            "train_minutes": (time.perf_counter() - started) / 60, "top1_by_epoch": history}


def summarize(row: Row, runs: list[dict]) -> dict:
    """One table row: medians over the row's seeds, and the spread of the final top-1."""
    top1 = [r["val_top1"] for r in runs]
    return {"row": row.label, "model": row.model, "motion_loss": row.motion_loss, "ponder_scale": row.ponder_scale,
            "seeds": len(runs),
            "val_top1": statistics.median(top1), "top1_min": min(top1), "top1_max": max(top1),
            "val_top5": statistics.median(r["val_top5"] for r in runs),
            "best_val_top1": statistics.median(r["best_val_top1"] for r in runs),
            "gflops_mean": statistics.median(r["gflops_mean"] for r in runs),
            "train_minutes": statistics.median(r["train_minutes"] for r in runs)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="micro", help="model size: nano, micro, ti, s, b (default micro)")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--classes", type=int, default=4)
    parser.add_argument("--per-class", type=int, default=100)
    parser.add_argument("--crop", type=int, default=64, help="crop size in pixels, a multiple of 16")
    parser.add_argument("--frames", type=int, default=8, help="frames per clip (T)")
    parser.add_argument("--interval", type=int, default=4, help="frame interval (the synthetic clips have 32 frames)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seeds", default="0", help="comma-separated training seeds (init + batch order); "
                        "each row runs once per seed and the table shows medians")
    parser.add_argument("--data-seed", type=int, default=0, help="seed of the synthetic set and its train views")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: all cores)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--only", default=None, help="comma-separated row labels to run (the dense row always runs)")
    parser.add_argument("--quick", action="store_true", help="dense + halting rows, 8 epochs")
    parser.add_argument("--json", action="store_true", help="also print the rows as JSON")
    parser.add_argument("--augment-on", choices=["decode", "device"], default=DataConfig().augment_on,
                        help="where train views are augmented (DataConfig.augment_on; default: the project's)")
    parser.add_argument("--randaugment", action="store_true", help="RandAugment n=2 m=9 on the train views "
                        "(off by default, as in the demo)")
    args = parser.parse_args(argv)
    if args.quick:
        args.epochs = min(args.epochs, 8)
    if args.crop % 16:
        parser.error(f"--crop {args.crop}: must be a multiple of the patch size 16")
    threads = args.threads or torch.get_num_threads()
    device = torch.device(args.device)
    rows = rows_for(args.size, args.quick)
    if args.only:
        wanted = {label.strip() for label in args.only.split(",")}
        unknown = wanted - {r.label for r in rows}
        if unknown:
            parser.error(f"--only: unknown rows {sorted(unknown)}; rows are {[r.label for r in rows]}")
        rows = [r for r in rows if r.label == "dense" or r.label in wanted]

    began = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="hvt-bench-learn-") as tmp:
        make_synthetic_dataset(tmp, classes=args.classes, per_class=args.per_class, seed=args.data_seed, frames=32,
                               size=(args.crop, args.crop))
        splits = read_split(Path(tmp))
    train_videos, train_labels = splits["train"]
    val = decode_views(*splits["val"], data_config(args), training=False, nonce=0)
    epochs_views = [decode_views(train_videos, train_labels, data_config(args), training=True, nonce=1 + e)
                    for e in range(args.epochs)]
    torch.set_num_threads(threads)  # the decoder set one thread per decode actor; training gets them all back
    print(f"synthetic set: {args.classes} classes, {len(train_labels)} train / {len(val['label'])} val clips; "
          f"{args.epochs} epochs of train views decoded in {time.perf_counter() - began:.0f} s", flush=True)

    seeds = [int(v) for v in args.seeds.split(",")]
    runs = [train_row(row, args, seed, epochs_views, val, args.classes, device) for row in rows for seed in seeds]
    results = [summarize(row, [r for r in runs if r["row"] == row.label]) for row in rows]
    dense = next(r for r in results if r["row"] == "dense")
    for r in results:
        r["gflops_ratio"] = r["gflops_mean"] / dense["gflops_mean"]

    machine = (torch.cuda.get_device_name(device) if device.type == "cuda"
               else f"CPU ({platform.machine()}, {torch.get_num_threads()} threads)")
    print()
    print(f"bench/learn.py  size={args.size} crop={args.crop} epochs={args.epochs} batch={args.batch_size} "
          f"frames={args.frames}x{args.interval} lr={args.lr} seeds={args.seeds} data-seed={args.data_seed} "
          f"augment-on={args.augment_on} randaugment={args.randaugment}  on {machine}")
    print("top-1 / top-5 / GFLOPs: after the last epoch, median over seeds; best: best epoch's top-1, median; "
          "range: last-epoch top-1 over seeds")
    header = (f"{'row':<11} {'model':<26} {'top-1':>6} {'range':>11} {'top-5':>6} {'best':>6} {'GFLOPs':>8} "
              f"{'vs dense':>8} {'min/run':>7}")
    print(header)
    print("-" * len(header))
    for r in results:
        model = r["model"] + ("" if r["motion_loss"] else " -motion") + (
            f" ponder x{r['ponder_scale']:g}" if r["ponder_scale"] != 1 else "")
        span = f"{r['top1_min']:.2f}-{r['top1_max']:.2f}"
        print(f"{r['row']:<11} {model:<26} {r['val_top1']:6.3f} {span:>11} {r['val_top5']:6.3f} "
              f"{r['best_val_top1']:6.3f} {r['gflops_mean']:8.4f} {r['gflops_ratio']:8.2f} {r['train_minutes']:7.1f}")
    meeting = [r for r in results if r["row"] != "dense" and r["val_top1"] >= ACCEPT_TOP1
               and r["gflops_ratio"] <= ACCEPT_GFLOPS_RATIO]
    print(f"\nacceptance (a HaltingVT row: median val top-1 >= {ACCEPT_TOP1:.2f} at <= {ACCEPT_GFLOPS_RATIO:.0%} of "
          f"dense GFLOPs): {'MET by ' + ', '.join(r['row'] for r in meeting) if meeting else 'NOT MET'}")
    print(f"total {(time.perf_counter() - began) / 60:.1f} min")
    if args.json:
        print(json.dumps({"rows": results, "runs": runs}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
