"""GPU benchmark, prepared to run unedited on a lent H100/H200 (PyTorch + CUDA there, no network, no Ray).

    python bench/gpu.py                 # on the GPU machine, from the repository root (at most ~8 minutes)
    python bench/gpu.py --json          # also print the rows as one JSON list
    python bench/gpu.py --smoke --json  # tiny sizes on the CPU (what the test runs), ~1 minute

It needs only torch and the project's ``hvt/model`` package (plus the standard library) and stops with a
one-line message when either is missing. Four sections, every row measured in this one run:

0. **paths** (``bench/gpu_paths.py``), first: each CUDA-only path once, ``ok`` or the error: the training
   loop's and the distributed evaluator's collectives and a few DDP training steps under a real NCCL group
   (world size 1; the Ray Train path with ``use_gpu`` too when Ray is importable), NCCL refusing a CPU tensor,
   bf16 autocast, the nested-tensor attention against the per-clip path (forward and backward) and inductor
   ``compile_blocks`` against eager. Rows that need more of the project's stack (Ray, pydantic,
   torchmetrics) than the machine has say ``skipped: needs ...``; on the CPU the group rows use gloo and the
   CUDA-only rows say ``skipped: no CUDA``.

1. **correctness** on the device: ``mask`` vs ``remove`` logits of the same calibrated HaltingVT, in float32
   (relative max |diff| <= 1e-4) and in bf16 autocast (<= 5e-2: bf16 keeps 8 bits of mantissa and a halting
   decision near the threshold can flip), plus the share of (clip, block) token counts that agree; the attention
   path ``remove`` really took (``hvt.model.varlen.PATH_CALLS``: ``nested`` = the variable-length kernel on
   CUDA; on the CPU the exact ``per_sample`` path); host syncs per ``remove`` forward (profiler).
2. **training step** at 8x224^2 bf16, batch 16, clips held in device memory: clips/s and MFU for ``jointvt-s``
   (dense) and ``haltingvt-s-g05-b20`` in ``mask`` and ``remove`` mode, eager and compiled. MFU = 6 x the
   multiply-adds the model says it spent / seconds / the device's dense bf16 peak (``hvt.model.mfu``).
3. **inference** at batch 64 bf16: clips/s of ``jointvt-s`` and the four paper variants in ``remove`` mode, the
   speedup over dense, the FLOP ratio, and speedup / FLOP ratio.

HaltingVTs have random weights; as in ``bench/model.py`` each gets one offset inside its halting sigmoid,
bisected on separate calibration clips so that ``--active-fraction`` (0.55) of the (token, block) slots stay
active, which spreads halting over the blocks. Rows past ``--budget-s`` are skipped (and say so); a row that
fails records its error and the rest still run. Exit code 0 when correctness holds and no row failed.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any


def _die(message: str) -> None:
    print(f"bench/gpu.py: {message}", file=sys.stderr)
    sys.exit(2)


try:
    import torch
    import torch.nn.functional as F
except ImportError as _err:  # pragma: no cover - the lent machine has torch preinstalled
    _die(f"PyTorch is not importable ({_err}); install torch >= 2.5 (the CUDA build on a GPU machine)")

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
try:
    from bench.gpu_paths import run_paths
    from hvt.model import PAPER_VARIANTS, create_model, varlen
    from hvt.model.halting import calibrate_halting_offset
    from hvt.model.mfu import inference_flops, peak_flops, training_flops
except ImportError as _err:
    _die(f"cannot import the project's hvt/model package ({_err}); run from the repository checkout: "
         "python bench/gpu.py")

TRAIN_VARIANTS = ("jointvt-s", "haltingvt-s-g05-b20")
CHECK_VARIANT = "haltingvt-s-g05-b20"
TOL_FP32, TOL_BF16 = 1e-4, 5e-2
SYNC_OPS = ("aten::_local_scalar_dense", "aten::nonzero", "aten::equal")  # item/bool/int/float end in the first


def sized(name: str, size: str) -> str:
    """``haltingvt-s-g05-b20`` -> ``haltingvt-nano-g05-b20`` for ``size='nano'``."""
    parts = name.split("-")
    parts[1] = size
    return "-".join(parts)


class Bench:
    check_variant, tol_fp32, tol_bf16 = CHECK_VARIANT, TOL_FP32, TOL_BF16  # read by bench/gpu_paths.py

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.dev = torch.device(args.device)
        self.rows: list[dict[str, Any]] = []
        self.started = time.perf_counter()
        self.peak = peak_flops(self.dev, args.peak_tflops)
        self.failed = False

    # ------------------------------------------------------------------ helpers
    def sync(self) -> None:
        if self.dev.type == "cuda":
            torch.cuda.synchronize(self.dev)

    def autocast(self, bf16: bool = True):
        return torch.autocast(self.dev.type, dtype=torch.bfloat16, enabled=bf16)

    def over_budget(self) -> bool:
        return time.perf_counter() - self.started > self.args.budget_s

    def name(self, variant: str) -> str:
        return sized(variant, self.args.size_name) if self.args.size_name != "s" else variant

    def clips(self, batch: int, seed: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(seed)
        a = self.args
        return (torch.rand(batch, 3, a.frames, a.size, a.size, generator=g) * 2 - 1).to(self.dev)

    def model(self, variant: str, mode: str | None = None):
        torch.manual_seed(0)
        model = create_model(self.name(variant), num_frames=self.args.frames, img_size=self.args.size,
                             **self.args.overrides).to(self.dev)
        if model.config.halting:
            calibrate_halting_offset(model.eval(), self.clips(2, seed=1), self.args.active_fraction, iters=8)
            if mode:
                model.set_halted_token_mode(mode)
        return model

    def add(self, row: dict[str, Any]) -> None:
        row = {"section": row.pop("section"), **row, "device": self.device_name()}
        self.rows.append(row)
        shown = {k: v for k, v in row.items() if k not in ("section", "device")}
        print(f"# {row['section']}: {shown}", file=sys.stderr, flush=True)

    def device_name(self) -> str:
        return torch.cuda.get_device_name(self.dev) if self.dev.type == "cuda" else "cpu"

    def guarded(self, section: str, label: dict[str, Any], fn) -> None:
        if self.over_budget():
            self.add({"section": section, **label, "status": f"skipped: past the {self.args.budget_s:.0f} s budget"})
            return
        try:
            fn()
        except Exception as err:  # noqa: BLE001 - one failing row must not lose the others
            self.failed = True
            self.add({"section": section, **label, "status": f"error: {type(err).__name__}: {str(err)[:300]}"})
            if self.dev.type == "cuda":
                torch.cuda.empty_cache()

    # ------------------------------------------------------------------ 1. correctness
    def correctness(self) -> None:
        a = self.args
        model = self.model(CHECK_VARIANT).eval()
        clips = self.clips(a.check_batch, seed=3)
        results = {}
        for bf16 in (False, True):
            outs = {}
            for mode in ("mask", "remove"):
                model.set_halted_token_mode(mode)
                varlen.PATH_CALLS.clear()
                with torch.inference_mode(), self.autocast(bf16):
                    outs[mode] = model(clips)
                paths = dict(varlen.PATH_CALLS)
            ref, got = outs["mask"].logits.float(), outs["remove"].logits.float()
            rel = float((ref - got).abs().max() / ref.abs().max().clamp_min(1e-6))
            agree = float((outs["mask"].tokens_per_layer == outs["remove"].tokens_per_layer).float().mean())
            tol = TOL_BF16 if bf16 else TOL_FP32
            results[bf16] = rel <= tol
            self.add({"section": "correctness", "variant": CHECK_VARIANT, "batch": a.check_batch,
                      "dtype": "bf16" if bf16 else "fp32", "rel_max_diff": round(rel, 6), "tolerance": tol,
                      "token_counts_agree": round(agree, 4), "remove_paths": paths,
                      "status": "ok" if rel <= tol else "FAIL"})
        # the variable-length path must really be the one taken on CUDA
        want = "nested" if self.dev.type == "cuda" else "per_sample"
        taken = paths.get(want, 0) > 0
        syncs = self.count_syncs(model, clips)
        self.add({"section": "correctness", "variant": CHECK_VARIANT, "check": f"remove took the {want} path",
                  "remove_paths": paths, "host_syncs_per_forward": syncs,
                  "halting_blocks": model.config.num_halting_blocks, "status": "ok" if taken else "FAIL"})
        if not (all(results.values()) and taken):
            self.failed = True

    def count_syncs(self, model, clips: torch.Tensor) -> int:
        """Device-to-host reads in one ``remove`` forward: the profiler's scalar reads / ``nonzero`` / ``equal``
        plus ``tolist`` / ``cpu`` / ``numpy`` calls, which the profiler does not see (wrapped for the count)."""
        from torch.profiler import ProfilerActivity, profile

        model.set_halted_token_mode("remove")
        calls = {"n": 0}
        originals = {name: getattr(torch.Tensor, name) for name in ("tolist", "cpu", "numpy")}

        def wrap(original):
            def counted(t, *args, **kwargs):
                calls["n"] += 1
                return original(t, *args, **kwargs)
            return counted

        with torch.inference_mode(), self.autocast(True):
            model(clips)  # warm
            try:
                for name, original in originals.items():
                    setattr(torch.Tensor, name, wrap(original))
                with profile(activities=[ProfilerActivity.CPU]) as prof:
                    model(clips)
            finally:
                for name, original in originals.items():
                    setattr(torch.Tensor, name, original)
        ops = sum(e.count for e in prof.key_averages() if e.key in SYNC_OPS)
        return int(ops) + calls["n"]

    # ------------------------------------------------------------------ 2. training step
    def train_row(self, variant: str, mode: str, compiled: bool) -> None:
        a = self.args
        model = self.model(variant, None if mode == "dense" else mode).train()
        if compiled:
            model.compile_blocks(backend=a.compile_backend)
        fused = self.dev.type == "cuda"
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=fused) if fused else \
            torch.optim.AdamW(model.parameters(), lr=1e-4)
        clips = self.clips(a.train_batch, seed=4)
        labels = torch.randint(0, model.config.num_classes, (a.train_batch,), device=self.dev)
        spent = torch.zeros((), dtype=torch.float64, device=self.dev)

        def step() -> None:
            nonlocal spent
            with self.autocast():
                out = model(clips)
            loss = F.cross_entropy(out.logits.float(), labels) + out.ponder_loss.float()
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            spent = spent + out.gflops.double().sum()

        t0 = time.perf_counter()
        for _ in range(a.train_warmup):
            step()
        self.sync()
        warm_s = time.perf_counter() - t0
        spent.zero_()
        t0 = time.perf_counter()
        for _ in range(a.train_steps):
            step()
        self.sync()
        seconds = time.perf_counter() - t0
        gmacs = float(spent)
        row = {"section": "train", "variant": variant, "mode": mode, "compile": compiled, "batch": a.train_batch,
               "clips_per_s": round(a.train_steps * a.train_batch / seconds, 2),
               "gflops_per_clip": round(gmacs / (a.train_steps * a.train_batch), 3),
               "tflops_per_s": round(training_flops(gmacs) / seconds / 1e12, 3),
               "mfu": round(training_flops(gmacs) / seconds / self.peak, 4) if self.peak else None,
               "warmup_s": round(warm_s, 1), "status": "ok"}
        self.add(row)

    def training(self, compiled: bool) -> None:
        if compiled and self.args.no_compile:
            return
        for variant, mode in ((TRAIN_VARIANTS[0], "dense"), (TRAIN_VARIANTS[1], "mask"),
                              (TRAIN_VARIANTS[1], "remove")):
            label = {"variant": variant, "mode": mode, "compile": compiled}
            self.guarded("train", label, lambda v=variant, m=mode, c=compiled: self.train_row(v, m, c))
            if self.dev.type == "cuda":
                torch.cuda.empty_cache()

    # ------------------------------------------------------------------ 3. inference
    def infer_row(self, variant: str, dense: dict[str, float]) -> None:
        a = self.args
        model = self.model(variant, "remove").eval()
        mode = "remove" if model.config.halting else "dense"
        clips = self.clips(a.infer_batch, seed=5)
        times, out = [], None
        for rep in range(a.infer_warmup + a.infer_reps):
            with torch.inference_mode(), self.autocast():
                self.sync()
                t0 = time.perf_counter()
                out = model(clips)
                self.sync()
            if rep >= a.infer_warmup:
                times.append(time.perf_counter() - t0)
        seconds = statistics.median(times)
        gflops = float(out.gflops.mean())
        row = {"section": "infer", "variant": variant, "mode": mode, "batch": a.infer_batch,
               "clips_per_s": round(a.infer_batch / seconds, 2), "gflops_per_clip": round(gflops, 3),
               "mfu": round(inference_flops(gflops * a.infer_batch) / seconds / self.peak, 4) if self.peak else None}
        if mode == "dense":
            dense.update(clips_per_s=row["clips_per_s"], gflops=gflops)
        elif dense:
            speedup, ratio = row["clips_per_s"] / dense["clips_per_s"], dense["gflops"] / gflops
            row.update(speedup_vs_dense=round(speedup, 3), flop_ratio_vs_dense=round(ratio, 3),
                       speedup_over_flop_ratio=round(speedup / ratio, 3))
        row["status"] = "ok"
        self.add(row)

    def inference(self) -> None:
        dense: dict[str, float] = {}
        for variant in PAPER_VARIANTS:
            self.guarded("infer", {"variant": variant}, lambda v=variant: self.infer_row(v, dense))
            if self.dev.type == "cuda":
                torch.cuda.empty_cache()

    # ------------------------------------------------------------------ output
    def table(self) -> None:
        cols = ("section", "variant", "mode", "compile", "dtype", "batch", "clips_per_s", "gflops_per_clip", "mfu",
                "speedup_vs_dense", "flop_ratio_vs_dense", "speedup_over_flop_ratio", "rel_max_diff",
                "host_syncs_per_forward", "status")
        shown = [c for c in cols if any(c in r for r in self.rows)]
        print(f"# bench/gpu.py on {self.device_name()} (torch {torch.__version__}), clip {self.args.frames}x"
              f"{self.args.size}^2, peak bf16 {self.peak / 1e12 if self.peak else 'unknown'} TFLOP/s, "
              f"{time.perf_counter() - self.started:.0f} s")
        print(" | ".join(shown))
        for r in self.rows:
            print(" | ".join("" if r.get(c) is None else str(r.get(c)) for c in shown))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--smoke", action="store_true", help="tiny sizes on the CPU (nano variants, depth 8, 4x32^2)")
    ap.add_argument("--json", action="store_true", help="also print the rows as one JSON list")
    ap.add_argument("--device", default=None, help="default: cuda (cpu with --smoke)")
    ap.add_argument("--budget-s", type=float, default=None,
                    help="skip rows that would start after this many seconds (default 400; --smoke: no limit)")
    ap.add_argument("--peak-tflops", type=float, default=None, help="override the device's bf16 peak for MFU")
    ap.add_argument("--no-compile", action="store_true", help="skip the compiled training rows")
    ap.add_argument("--active-fraction", type=float, default=0.55)
    args = ap.parse_args(argv)
    if args.smoke:
        args.device = args.device or "cpu"
        # nano with 6 halting blocks (depth 8), so that clips halt differently and remove packs unequal clips
        args.size_name, args.frames, args.size, args.overrides = "nano", 4, 32, {"depth": 8}
        args.check_batch, args.train_batch, args.infer_batch = 4, 4, 4
        args.train_warmup, args.train_steps, args.infer_warmup, args.infer_reps = 1, 2, 1, 2
        args.compile_backend = "eager"  # dynamo capture only: checks the compile path without a C++ toolchain
        args.budget_s = args.budget_s or float("inf")  # a loaded CPU must not turn rows into skips
    else:
        args.device = args.device or "cuda"
        args.size_name, args.frames, args.size, args.overrides = "s", 8, 224, {}
        args.check_batch, args.train_batch, args.infer_batch = 8, 16, 64
        args.train_warmup, args.train_steps, args.infer_warmup, args.infer_reps = 3, 10, 2, 5
        args.compile_backend = "inductor"
        args.budget_s = args.budget_s or 400.0
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        _die(f"no CUDA device visible to torch {torch.__version__} (cuda build: {torch.version.cuda}); "
             "run on the GPU machine, or use --smoke for the CPU check")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    bench = Bench(args)
    run_paths(bench)  # first: a few seconds per row settle the CUDA-only paths before the budget is spent
    bench.guarded("correctness", {"variant": CHECK_VARIANT}, bench.correctness)
    bench.training(compiled=False)
    bench.inference()
    bench.training(compiled=True)  # last: compiling takes the longest, and the budget may cut it
    bench.table()
    if args.json:
        print(json.dumps(bench.rows))
    return 1 if bench.failed else 0


if __name__ == "__main__":
    sys.exit(main())
