"""How close does the shards-to-clips pipeline get to bare decoding, and what does shard-time transcoding buy?

Rows (clips/s and clips/s per core, median of --repeats passes):
  bare-decode      one process, decord only (tar read + sample 8x32x1 + decode the needed frames): the limit
  bare-pipeline    one process, the exact per-sample work of a decode actor (decode + augment + static clip)
  ray-1w / ray-2w  build_clip_dataset with 1 / 2 decode actors of 1 CPU each, timed after the first batch
on four clip sets: the real 10 s Kinetics clips of ../shared/realdata and synthetic 10 s 340x256 clips made here
with PyAV, each as found ("orig") and re-encoded at shard time ("tc": short side 256, a keyframe every 8 frames).
Plus resident memory (RSS) of one process over a long decode run.

    python bench/data.py --quick          # a few minutes on 2 cores
    python bench/data.py --json           # also print the rows as JSON
Generated shards and transcodes go to $HVT_BENCH_OUT (default: <tmp>/hvt-bench-data), outside the repository,
because they contain the third-party real clips; the clips themselves are read in place.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from hvt.data import DataConfig, build_clip_dataset  # noqa: E402
from hvt.data.clip_sampling import ClipSampler  # noqa: E402
from hvt.data.decode import DecodeClips, decode_frames  # noqa: E402
from hvt.data.shards import iter_tar_samples, resolve_shard_urls  # noqa: E402
from hvt.data.testing import FakeSample, write_version  # noqa: E402

REAL = ROOT.parent / "shared" / "realdata" / "videos" / "kinetics"
# Shards and transcodes hold the third-party real footage: keep them outside the repository (a temp folder).
OUT = Path(os.environ.get("HVT_BENCH_OUT", Path(tempfile.gettempdir()) / "hvt-bench-data"))


# ---------------------------------------------------------------------------------------------- clip sets


def synthetic_clip(path: Path, seed: int, seconds: float = 10.0, fps: int = 30, size=(604, 340)) -> None:
    """A 10 s 340p clip (short side 340) with texture and motion: a smooth textured background panning and moving
    blocks, x264 defaults (a keyframe every 250 frames at most), like a downloaded Kinetics clip."""
    import av

    rng = np.random.default_rng(seed)
    w, h = size
    yy, xx = np.mgrid[0 : h * 2, 0 : w * 2]
    phase = rng.uniform(0, 6.28, 3)
    waves = [np.sin(xx / (9 + 4 * k) + phase[k]) + np.cos(yy / (13 + 3 * k) - phase[k]) for k in range(3)]
    noise = rng.normal(0, 12, (h * 2, w * 2, 3))
    background = (np.stack(waves, -1) * 50 + 128 + noise).clip(0, 255).astype(np.uint8)
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        stream.options = {"preset": "veryfast", "crf": "23"}
        for i in range(int(seconds * fps)):
            dy, dx = (i * 2) % h, (i * 3) % w
            frame = background[dy : dy + h, dx : dx + w].copy()
            for k in range(3):
                y = int((h - 40) * (0.5 + 0.5 * np.sin(i / 15 + k)))
                x = int((w - 40) * (0.5 + 0.5 * np.cos(i / 20 + 2 * k)))
                frame[y : y + 40, x : x + 40] = (80 * k, 255 - 60 * k, 40 + 90 * k)
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)


def transcode(src: Path, dst: Path, short_side: int = 256, keyframe_every: int = 8) -> None:
    """Re-encode exactly as the shard writer does (``hvt.ingest.transcode``), and refuse output that the training
    decoder would not read frame-exactly (the shard-time check against the sequential PyAV reference)."""
    from hvt.ingest.config import TranscodeOptions
    from hvt.ingest.framecheck import check_training_decode
    from hvt.ingest.transcode import transcode_video

    data, info = transcode_video(src.read_bytes(), TranscodeOptions(short_side=short_side, keyint=keyframe_every))
    verdict = check_training_decode(data, codec=info.codec, num_checks=8, tolerance=1.0)
    if not verdict.ok:
        sys.exit(f"transcoded {src.name} is not frame-exact: {verdict.detail}")
    dst.write_bytes(data)


def clip_sets(quick: bool) -> dict[str, list[Path]]:
    if not REAL.is_dir():
        sys.exit(f"{REAL} is missing: the benchmark needs ../shared/realdata next to the repository")
    real = sorted(p for p in REAL.iterdir() if "rawvideo_dataset_part" not in p.name)  # the 10 s clips
    synth_dir = OUT / "synthetic340p"
    synth_dir.mkdir(parents=True, exist_ok=True)
    synth = []
    for i in range(3 if quick else 8):
        path = synth_dir / f"synthetic_{i}.mp4"
        if not path.exists():
            synthetic_clip(path, seed=i)
        synth.append(path)
    sets = {"real-orig": real, "synth-orig": synth}
    for name, paths in list(sets.items()):
        tc_dir = OUT / (name.replace("orig", "tc") + "-checked")  # not a transcode cached by an older bench
        tc_dir.mkdir(parents=True, exist_ok=True)
        tcs = []
        for p in paths:
            dst = tc_dir / (p.stem + ".mp4")
            if not dst.exists():
                tmp = dst.with_suffix(".tmp.mp4")
                transcode(p, tmp)
                tmp.rename(dst)
            tcs.append(dst)
        sets[name.replace("orig", "tc")] = tcs
    return sets


def write_set(name: str, paths: list[Path], repeats: int, shards: int = 2) -> str:
    """``shards`` shards holding every clip ``repeats`` times (same bytes, new keys)."""
    samples = [FakeSample(f"{p.stem.replace('.', '_')}_{r}", p.read_bytes(), i % 5, ext=p.suffix[1:])
               for r in range(repeats) for i, p in enumerate(paths)]  # fmt: skip
    parts = [samples[i::shards] for i in range(shards)]
    return write_version(str(OUT / "shards" / name), {"train": parts}, [str(i) for i in range(5)])


# ------------------------------------------------------------------------------------------- measurements


def _samples(version: str):
    for url in resolve_shard_urls(version, "train"):
        with open(url, "rb") as handle:
            yield from iter_tar_samples(handle, url)


def bare(version: str, config: DataConfig, full_pipeline: bool) -> tuple[float, float]:
    """(clips per wall second, clips per CPU second) of one process (decord 1 thread, torch 1 thread)."""
    import torch

    torch.set_num_threads(1)
    sampler, rng = ClipSampler.from_config(config), np.random.default_rng(0)
    decode = DecodeClips(config, training=True, rng_nonce=0)
    n, start, cpu = 0, time.perf_counter(), time.process_time()
    for s in _samples(version):
        if full_pipeline:
            decode(
                {
                    "key": np.array([s.key], object),
                    "video": np.array([s.video], object),
                    "label": np.array([s.label]),
                }
            )
        else:
            decode_frames(s.video, sampler, True, rng, num_threads=1)
        n += 1
    return n / (time.perf_counter() - start), n / (time.process_time() - cpu)


def _rss_mb(pid: int | str = "self") -> float:
    with open(f"/proc/{pid}/status") as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _actor_rss_mb() -> list[float]:
    out = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as handle:
                if b"MapWorker" in handle.read():
                    out.append(_rss_mb(pid))
        except OSError:
            continue
    return out


class TimedDecodeClips(DecodeClips):
    """The decode actor plus a ``done_at`` column: when each batch left the actor (wall clock)."""

    def __call__(self, batch):
        out = super().__call__(batch)
        out["done_at"] = np.full(len(out["label"]), time.time())
        return out


def ray_run(version: str, config: DataConfig, workers: int) -> tuple[float, float, list[float]]:
    """(clips/s, seconds to the first decoded batch, decode-actor RSS in MB at the end).

    Ray Data hands rows over in whole task outputs, so timing at the consumer measures prefetch and start-up. The
    actors stamp each batch instead: the rate is the rows after the first batch over the time from the first
    batch's stamp to the last one, i.e. the steady streaming rate of the pool, start-up excluded.
    """
    cfg = config.model_copy(update={"decode_workers": workers, "decode_cpus": 1.0})
    ds = build_clip_dataset(version, "train", cfg, training=True, decoder=TimedDecodeClips)
    start, stamps, rss = time.time(), [], []
    for batch in ds.iter_batches(batch_size=cfg.decode_batch_rows, batch_format="numpy"):
        stamps.extend(batch["done_at"].tolist())
        rss = _actor_rss_mb() or rss
    stamps.sort()
    first = stamps[0]
    first_batch = sum(1 for t in stamps if t == first)
    return (len(stamps) - first_batch) / max(stamps[-1] - first, 1e-6), first - start, rss


def memory_run(version: str, config: DataConfig, samples: int) -> dict[str, float]:
    """RSS of one process decoding ``samples`` clips with the full per-sample pipeline."""
    decode = DecodeClips(config, training=True, rng_nonce=1)
    readings, n = [], 0
    while n < samples:
        for s in _samples(version):
            decode(
                {
                    "key": np.array([s.key], object),
                    "video": np.array([s.video], object),
                    "label": np.array([s.label]),
                }
            )
            n += 1
            if n % 25 == 0:
                readings.append(_rss_mb())
            if n >= samples:
                break
    warm = readings[min(1, len(readings) - 1)]
    return {"samples": n, "rss_mb_after_50": round(warm, 1), "rss_mb_end": round(readings[-1], 1),
            "rss_mb_max": round(max(readings), 1)}  # fmt: skip


LOAD_AT_START = open("/proc/loadavg").read().split()[:3]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="small sets, real clips only on Ray (a few minutes)"
    )
    parser.add_argument("--json", action="store_true", help="also print the rows as JSON")
    parser.add_argument("--repeats", type=int, default=None, help="passes per bare measurement (median)")
    args = parser.parse_args()
    repeats = args.repeats or (2 if args.quick else 3)
    config = DataConfig()  # the paper's 8x32x1, 224 crops, RandAugment, static clips

    sets = clip_sets(args.quick)
    copies = 3 if args.quick else 6
    versions = {name: write_set(name, paths, copies) for name, paths in sets.items()}
    rows = []
    for name, version in versions.items():
        size_mb = sum(p.stat().st_size for p in sets[name]) / 1e6
        for kind, full in (("bare-decode", False), ("bare-pipeline", True)):
            runs = [bare(version, config, full) for _ in range(repeats)]
            rate = statistics.median(r[0] for r in runs)
            per_cpu = statistics.median(r[1] for r in runs)
            rows.append({"set": name, "mode": kind, "clips_per_s": rate, "clips_per_cpu_s": round(per_cpu, 2),
                         "cores": 1, "mb_per_clip": round(size_mb / len(sets[name]), 2)})  # fmt: skip
            print(f"  {name:10s} {kind:14s} {rate:6.1f} clips/s", file=sys.stderr)

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    import ray

    # 2 decode actors x 1 CPU + read tasks (0.25 CPU, mostly I/O) must fit, or the reads never get scheduled
    ray.init(num_cpus=3, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        from ray.data import DataContext

        DataContext.get_current().enable_progress_bars = False
        ray_sets = ["real-orig", "real-tc"] if args.quick else list(versions)
        for name in ray_sets:
            for workers in (1, 2):
                rate, startup, rss = ray_run(versions[name], config, workers)
                rows.append({"set": name, "mode": f"ray-{workers}w", "clips_per_s": rate, "cores": workers,
                             "clips_per_cpu_s": None,
                             "startup_s": round(startup, 1), "actor_rss_mb": [round(r) for r in rss]})  # fmt: skip
                print(f"  {name:10s} ray-{workers}w         {rate:6.1f} clips/s", file=sys.stderr)
    finally:
        ray.shutdown()

    memory = memory_run(versions["real-tc"], config, 200 if args.quick else 1000)
    for row in rows:
        row["clips_per_s"] = round(row["clips_per_s"], 2)
        row["clips_per_s_per_core"] = round(row["clips_per_s"] / row["cores"], 2)
    print(render(rows, memory))
    if args.json:
        print(json.dumps({"rows": rows, "memory": memory}, indent=2))


def render(rows: list[dict], memory: dict) -> str:
    lines = [f"load average at the start: {LOAD_AT_START}, at the end: {open('/proc/loadavg').read().split()[:3]} on {os.cpu_count()} cores", "",
             "| set | mode | clips/s (wall) | decode cores | clips/s/core (wall) | clips per CPU-second |",
             "|---|---|---:|---:|---:|---:|"]  # fmt: skip
    for r in rows:
        lines.append(f"| {r['set']} | {r['mode']} | {r['clips_per_s']:.1f} | {r['cores']} | "
                     f"{r['clips_per_s_per_core']:.1f} | {r['clips_per_cpu_s'] or 'n/a'} |")  # fmt: skip
    rate = {(r["set"], r["mode"]): r["clips_per_s"] for r in rows}
    cpu = {(r["set"], r["mode"]): r["clips_per_cpu_s"] for r in rows}
    lines.append("")
    for s in sorted({r["set"] for r in rows}):
        if (s, "ray-1w") in rate:
            lines.append(f"- {s} (wall clock): ray-1w / bare-pipeline = {rate[(s, 'ray-1w')] / rate[(s, 'bare-pipeline')]:.2f}, "
                         f"ray-1w / bare-decode = {rate[(s, 'ray-1w')] / rate[(s, 'bare-decode')]:.2f}, "
                         f"ray-2w / ray-1w = {rate[(s, 'ray-2w')] / rate[(s, 'ray-1w')]:.2f}")  # fmt: skip
    for base in ("real", "synth"):
        if (f"{base}-orig", "bare-decode") in rate:
            lines.append(f"- {base}: transcode speed-up per CPU-second (bare-decode) = "
                         f"{cpu[(f'{base}-tc', 'bare-decode')] / cpu[(f'{base}-orig', 'bare-decode')]:.2f}x, "
                         f"(bare-pipeline) = {cpu[(f'{base}-tc', 'bare-pipeline')] / cpu[(f'{base}-orig', 'bare-pipeline')]:.2f}x")  # fmt: skip
    lines.append(f"- memory: {memory}")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
