"""Model benchmark: GFLOPs and measured clips/s of Joint VT-S and the paper's HaltingVT-S variants at 8x224^2.

Rows, per variant and batch size: ``dense`` (jointvt-s), ``nohalt`` (a HaltingVT with halting switched off:
Glimpser only, the upper bound), and the three halted-token modes ``official`` / ``mask`` / ``remove``.
GFLOPs are per clip (one multiply-add = one FLOP), averaged over the batch; for the halting modes they are the
paper's count from the tokens each clip kept at each block (only ``remove`` really spends exactly that).

The weights are random, so the halting scores mean nothing by themselves: before timing, every HaltingVT gets
one offset inside its halting sigmoid (``calibrate_halting_offset``), chosen by bisection on separate
calibration clips so that on average ``--active-fraction`` (default 0.55) of the (token, block) slots of the
halting blocks stay active. The per-token spread of ``t[0]`` on random weights then spreads halting over all
blocks (the table of halting depths is printed); for G05-B20 this spends ~0.64 of the no-halting bound, close
to the paper's ratio for its trained G07 model (24.2 of 37.2 GFLOPs).

    python bench/model.py            # all variants, batch 1 and 8
    python bench/model.py --quick    # haltingvt-s-g05-b20 (mask, remove) + jointvt-s, batch 8 and 32, 3 reps
    python bench/model.py --json     # also print the rows as JSON
    python bench/model.py --quick --train-batch 8    # plus the training-step rows at batch 8

Training-step rows (``--train-batch N``; 0 = none, the default): one forward + backward + AdamW step (lr 0, so
every timed step sees the same weights and therefore the same halting) for the dense baseline and the halting
variant in ``mask`` and ``remove``, with their speed-up over dense against the same FLOP ratio (training
FLOPs are ~3x the forward's in every mode, so the ratio carries over).

Acceptance (``--quick``): ``remove`` at batch 32 is at least 0.8 x its FLOP ratio faster than dense, both
measured in the same run (medians, rows interleaved round-robin).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hvt.model import PAPER_VARIANTS, create_model  # noqa: E402
from hvt.model.halting import calibrate_halting_offset  # noqa: E402

ACCEPT_VARIANT = "haltingvt-s-g05-b20"


def make_clips(batch: int, frames: int, size: int, seed: int, device: str) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(batch, 3, frames, size, size, generator=g) * 2 - 1).to(device)


def time_once(model, clips: torch.Tensor) -> tuple[float, object]:
    sync = torch.cuda.synchronize if clips.is_cuda else (lambda: None)
    with torch.inference_mode():
        sync()
        t0 = time.perf_counter()
        out = model(clips)
        sync()
    return time.perf_counter() - t0, out


def time_train_step(model, clips: torch.Tensor, labels: torch.Tensor, optimizer) -> float:
    """Seconds for one forward + backward (CE + ponder loss) + optimiser step."""
    sync = torch.cuda.synchronize if clips.is_cuda else (lambda: None)
    sync()
    t0 = time.perf_counter()
    out = model(clips)
    loss = torch.nn.functional.cross_entropy(out.logits, labels) + out.ponder_loss
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    sync()
    return time.perf_counter() - t0


def train_step_rows(models: dict, batch: int, args, reps: int) -> list[dict]:
    """Training-step rows (dense + the halting modes in ``args.modes``/quick), timed round-robin, medians."""
    dev = args.device
    clips = make_clips(batch, args.frames, args.size, seed=3, device=dev)
    entries = []
    for name, model in models.items():
        base = model.config
        for mode in (["dense"] if not base.halting else ["mask", "remove"]):
            cfg = base if mode == "dense" else base.replace(halted_token_mode=mode)
            # lr 0: the step does all its work but leaves the weights (and so the halting) as they are
            opt = torch.optim.AdamW(model.parameters(), lr=0.0, weight_decay=0.0)
            entries.append({"name": name, "mode": mode, "model": model, "base": base, "cfg": cfg, "opt": opt,
                            "times": []})
    labels = torch.zeros(batch, dtype=torch.long, device=dev)
    for rep in range(args.warmup + reps):
        for e in entries:
            e["model"].config = e["cfg"]
            e["model"].train()
            sec = time_train_step(e["model"], clips, labels, e["opt"])
            e["model"].eval()
            e["model"].config = e["base"]
            if rep >= args.warmup:
                e["times"].append(sec)
        print(f"# train step batch {batch}: round {rep + 1}/{args.warmup + reps} done", file=sys.stderr)
    rows = []
    for e in entries:
        e["model"].config = e["cfg"]
        with torch.inference_mode():
            gflops = e["model"](clips).gflops.mean().item()
        e["model"].config = e["base"]
        sec = statistics.median(e["times"])
        rows.append({"variant": e["name"], "mode": e["mode"], "batch": batch, "device": dev,
                     "gflops": round(gflops, 3), "train_steps_per_s": round(1 / sec, 4),
                     "clips_per_s": round(batch / sec, 4), "sec_per_step": round(sec, 4)})
    return rows


def depth_histogram(out, glimpser_depth: int, depth: int) -> str:
    hd = out.halting_depth
    kept = hd[hd > 0]
    parts = []
    for d in range(glimpser_depth + 1, depth + 1):
        parts.append(f"{d}:{(kept == d).float().mean().item() * 100:.0f}%")
    return " ".join(parts)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true",
                    help="g05-b20 (mask, remove) + dense only, batch 8 and 32, fewer repetitions")
    ap.add_argument("--json", action="store_true", help="also print the rows as JSON")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batches", type=int, nargs="+", default=None, help="batch sizes (default 1 8; quick: 8 32)")
    ap.add_argument("--modes", nargs="+", default=None, choices=["nohalt", "official", "mask", "remove"],
                    help="halting modes to time (default: all four; quick: mask remove)")
    ap.add_argument("--frames", type=int, default=8)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--reps", type=int, default=None, help="timed runs per row (median; default 5, quick 3)")
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--active-fraction", type=float, default=0.55)
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    ap.add_argument("--train-batch", type=int, default=0,
                    help="also time a training step (forward + backward + optimiser) at this batch (0 = no)")
    args = ap.parse_args(argv)

    if args.threads:
        torch.set_num_threads(args.threads)
    batches = args.batches or ([8, 32] if args.quick else [1, 8])
    reps = args.reps or (3 if args.quick else 5)
    variants = ["jointvt-s", ACCEPT_VARIANT] if args.quick else list(PAPER_VARIANTS)
    modes = args.modes or (["mask", "remove"] if args.quick else ["nohalt", "official", "mask", "remove"])
    dev = args.device
    print(f"# device={dev} threads={torch.get_num_threads()} torch={torch.__version__} "
          f"clip={args.frames}x{args.size}^2 reps={reps} warmup={args.warmup}")
    print(f"# halting calibrated to active fraction {args.active_fraction} (offset inside the halting sigmoid)")

    # build every model once and calibrate its halting
    models = {}
    for name in variants:
        torch.manual_seed(0)
        model = create_model(name, num_frames=args.frames, img_size=args.size).to(dev).eval()
        cfg = model.config
        if cfg.halting:
            calib = make_clips(2, args.frames, args.size, seed=1, device=dev)
            offset = calibrate_halting_offset(model, calib, args.active_fraction, iters=8)
            print(f"# {name}: halting offset {offset:+.2f}, i.e. h = sigmoid({cfg.halt_scale:g}*t0 - "
                  f"{cfg.halt_center:g} {offset:+.2f})")
        models[name] = model

    # time: all rows of a batch size are measured round-robin (one run of each, repeated), so that the load of
    # a shared machine hits every row alike; each row reports its median
    rows: list[dict] = []
    dense: dict[int, dict] = {}
    for batch in batches:
        clips = make_clips(batch, args.frames, args.size, seed=2, device=dev)
        entries = []
        for name, model in models.items():
            base = model.config
            for mode in (["dense"] if not base.halting else modes):
                if mode == "dense":
                    cfg = base
                elif mode == "nohalt":
                    cfg = base.replace(halting=False)
                else:
                    cfg = base.replace(halted_token_mode=mode)
                entries.append({"name": name, "mode": mode, "model": model, "base": base, "cfg": cfg, "times": []})
        for rep in range(args.warmup + reps):
            for e in entries:
                e["model"].config = e["cfg"]
                sec, e["out"] = time_once(e["model"], clips)
                e["model"].config = e["base"]
                if rep >= args.warmup:
                    e["times"].append(sec)
            print(f"# batch {batch}: round {rep + 1}/{args.warmup + reps} done", file=sys.stderr)
        for e in entries:
            sec = statistics.median(e["times"])
            out = e["out"]
            row = {
                "variant": e["name"],
                "mode": e["mode"],
                "batch": batch,
                "device": dev,
                "gflops": round(out.gflops.mean().item(), 3),
                "clips_per_s": round(batch / sec, 4),
                "sec_per_batch": round(sec, 4),
            }
            if e["mode"] == "remove" and batch == batches[-1]:
                print(f"# {e['name']} b{batch}: halting depth of kept patches (block:share) "
                      f"{depth_histogram(out, e['base'].glimpser_depth, e['base'].depth)}")
            if e["mode"] == "dense":
                dense[batch] = row
            rows.append(row)

    # table
    print()
    print(f"{'variant':<22} {'mode':<9} {'batch':>5} {'GFLOPs':>8} {'clips/s':>9} {'speedup':>8} {'FLOP ratio':>10}")
    for r in rows:
        d = dense.get(r["batch"])
        speed = r["clips_per_s"] / d["clips_per_s"] if d else float("nan")
        ratio = d["gflops"] / r["gflops"] if d else float("nan")
        r["speedup_vs_dense"] = round(speed, 3)
        r["flop_ratio_vs_dense"] = round(ratio, 3)
        print(f"{r['variant']:<22} {r['mode']:<9} {r['batch']:>5} {r['gflops']:>8.2f} {r['clips_per_s']:>9.3f} "
              f"{speed:>7.2f}x {ratio:>9.2f}x")

    ok = True
    accept_batch = 32 if 32 in dense else max(dense, default=None)
    print()
    for r in rows:
        if r["variant"] == ACCEPT_VARIANT and r["mode"] == "remove" and r["batch"] in dense:
            need = 0.8 * r["flop_ratio_vs_dense"]
            passed = r["speedup_vs_dense"] >= need
            if r["batch"] == accept_batch:
                ok = passed
            print(f"{'acceptance' if r['batch'] == accept_batch else 'check'} ({ACCEPT_VARIANT}, remove, batch "
                  f"{r['batch']}): speedup {r['speedup_vs_dense']:.2f}x >= 0.8 x FLOP ratio "
                  f"{r['flop_ratio_vs_dense']:.2f}x = {need:.2f}x: {'PASS' if passed else 'FAIL'}")
    if args.train_batch:
        train = train_step_rows(models, args.train_batch, args, reps)
        dense_train = next((r for r in train if r["mode"] == "dense"), None)
        print()
        print("training step (forward + backward + AdamW step; same weights and halting in every timed step)")
        print(f"{'variant':<22} {'mode':<9} {'batch':>5} {'GFLOPs fwd':>10} {'s/step':>8} {'speedup':>8} "
              f"{'FLOP ratio':>10}")
        for r in train:
            speed = dense_train["sec_per_step"] / r["sec_per_step"] if dense_train else float("nan")
            ratio = dense_train["gflops"] / r["gflops"] if dense_train else float("nan")
            r["speedup_vs_dense"], r["flop_ratio_vs_dense"] = round(speed, 3), round(ratio, 3)
            print(f"{r['variant']:<22} {r['mode']:<9} {r['batch']:>5} {r['gflops']:>10.2f} {r['sec_per_step']:>8.3f} "
                  f"{speed:>7.2f}x {ratio:>9.2f}x")
            if r["mode"] == "remove":
                print(f"check (training step, {r['variant']}, remove, batch {r['batch']}): speedup "
                      f"{speed:.2f}x vs 0.8 x FLOP ratio {ratio:.2f}x = {0.8 * ratio:.2f}x: "
                      f"{'PASS' if speed >= 0.8 * ratio else 'FAIL'}")
        rows += [{**r, "kind": "train_step"} for r in train]
    if args.json:
        print(json.dumps(rows, indent=2))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
