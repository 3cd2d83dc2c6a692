"""`bench/gpu.py --smoke` runs end to end on the CPU, so the GPU script cannot rot between GPU sessions."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.timeout(900)
def test_gpu_bench_smoke_prints_rows():
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, str(REPO / "bench" / "gpu.py"), "--smoke", "--json"], cwd=REPO,
                          capture_output=True, text=True, timeout=880, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rows = json.loads(proc.stdout.strip().splitlines()[-1])
    by_section = {}
    for row in rows:
        by_section.setdefault(row["section"], []).append(row)
        assert row["status"] == "ok" or (row["section"] == "paths" and row["status"] == "skipped: no CUDA"), row
    assert set(by_section) == {"paths", "correctness", "train", "infer"}
    # the process-group rows run with gloo on the CPU; the CUDA-only ones say so
    paths = {r["check"]: r for r in by_section["paths"]}
    assert {c: paths[c]["status"] for c in paths} == {
        "process group": "ok", "distributed evaluator": "ok", "training steps": "ok",
        "nccl refuses a CPU tensor": "skipped: no CUDA", "ray train use_gpu": "skipped: no CUDA",
        "bf16 autocast": "skipped: no CUDA", "nested attention": "skipped: no CUDA",
        "inductor compile": "skipped: no CUDA"}
    assert all(paths[c]["backend"] == "gloo" for c in ("process group", "distributed evaluator", "training steps"))
    assert paths["distributed evaluator"]["clips"] > 0 and paths["training steps"]["steps"] == 3
    # remove really packed clips of different lengths on the exact CPU path, within one sync per halting block
    path_row = next(r for r in by_section["correctness"] if "check" in r)
    assert path_row["remove_paths"].get("per_sample", 0) > 0
    assert 0 < path_row["host_syncs_per_forward"] <= path_row["halting_blocks"]
    assert {(r["mode"], r["compile"]) for r in by_section["train"]} == {
        (m, c) for m in ("dense", "mask", "remove") for c in (False, True)}
    assert len(by_section["infer"]) == 5 and all(r["clips_per_s"] > 0 for r in by_section["infer"])
    assert all("flop_ratio_vs_dense" in r for r in by_section["infer"] if r["mode"] == "remove")


def test_gpu_bench_refuses_clearly_without_a_gpu():
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    proc = subprocess.run([sys.executable, str(REPO / "bench" / "gpu.py")], cwd=REPO, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 2
    assert "no CUDA device" in proc.stderr and "--smoke" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_gpu_only_path_checks_run_on_the_cpu():
    """The bodies of the CUDA-only ``paths`` rows (skipped by --smoke on the CPU) run here at smoke sizes, so they
    cannot rot between GPU sessions: the nested-tensor attention forced on the CPU against the per-clip path,
    bf16 autocast, compile_blocks (eager backend) against eager."""
    sys.path.insert(0, str(REPO))
    from bench import gpu, gpu_paths

    bench = gpu.Bench(gpu.parse_args(["--smoke"]))
    nested = gpu_paths.nested_check(bench)
    assert nested["fp32_rel_max_diff"] <= gpu.TOL_FP32 and nested["fp32_grad_rel_max_diff"] <= gpu_paths.GRAD_TOL_FP32
    assert "bf16_rel_max_diff" in nested
    assert "rel_max_diff_vs_fp32" in gpu_paths.bf16_check(bench)
    assert set(gpu_paths.compile_check(bench)) == {f"{m}_rel_max_diff" for m in ("official", "mask", "remove")}


@pytest.mark.integration
@pytest.mark.timeout(400)
def test_gpu_bench_ray_row_machinery_runs_with_gloo(tmp_path):
    """The ``ray train use_gpu`` row's machinery (the module shipped to the worker by value, Ray started for this
    checkout, the evaluator and DDP steps in a Ray Train worker, the return value) on CPU workers with gloo; in
    its own process, so that its Ray stops with it."""
    script = ("import json, sys; sys.path.insert(0, sys.argv[1]); from bench import gpu, gpu_paths; "
              "bench = gpu.Bench(gpu.parse_args(['--smoke'])); "
              "print(json.dumps(gpu_paths.ray_train_check(bench, use_gpu=False)))")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", script, str(REPO)], cwd=tmp_path, capture_output=True, text=True,
                          timeout=380, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["backend"] == "gloo" and result["eval_clips"] > 0 and result["train_loss"] > 0
