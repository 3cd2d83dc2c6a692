"""Train-time data cost per clip: decoding, the decode side of each augmentation placement, the trainer side.

Rows (fields ``set`` real/synth, ``profile`` = ``orig`` or the shard-time transcode ``s<short>-k<keyint>-c<crf>``,
``stage``, ``augment_on``, ``clips_per_s_per_core``, ``bytes_ratio`` = the profile's bytes / the original bytes):
  decode-only      one process: tar read + sample 8x32x1 + decord decoding the needed frames as stored
  decode-side      one process: everything a decode actor does per sample (``DecodeClips``), with
                   augment_on=decode (decode + augment + static clip) or augment_on=device (decode straight to
                   the fixed transfer size + draw the parameters)
  device-augment   the trainer-side augmentation (``DeviceAugment``: clip + static clip) on this CPU, per clip
  ray-1w / ray-2w  build_clip_dataset with 1 / 2 decode actors of 1 CPU each, timed after the first batch
bare rows count clips per CPU-second of one single-threaded process (machine load matters less than for wall
time); ray rows are wall-clock per actor. Sets: the real 10 s Kinetics clips of ../shared/realdata and synthetic
10 s 604x340 clips made here with PyAV, as found and re-encoded with ``--profile`` (default: the shard writer's
default); ``--sweep`` adds decode rows for a grid of profiles on the real clips. Plus the resident memory of one
decode process over a long run, and a trainer row: a micro HaltingVT trained here on batches from one Ray decode
actor, with the share of step time spent waiting for data (both placements).

    python bench/data.py --quick --json   # a few minutes on 2 cores
    python bench/data.py --quick --sweep --no-ray   # the transcode-profile grid
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


PROFILE_DEFAULT = None  # filled in from TranscodeOptions() (the shard writer's default) at start-up


def profile_name(short_side: int | None, keyint: int, crf: int) -> str:
    """``s256-k1-c23``: short side, keyframe interval (1 = all-intra), x264 CRF."""
    return f"s{short_side or 'orig'}-k{keyint}-c{crf}"


def parse_profile(name: str) -> dict:
    parts = dict((p[0], p[1:]) for p in name.split("-"))
    return {"short_side": None if parts["s"] == "orig" else int(parts["s"]), "keyint": int(parts["k"]),
            "crf": int(parts["c"])}  # fmt: skip


def transcode(src: Path, dst: Path, profile: str) -> None:
    """Re-encode exactly as the shard writer does (``hvt.ingest.transcode``), and refuse output that the training
    decoder would not read frame-exactly (the shard-time check against the sequential PyAV reference)."""
    from hvt.ingest.config import TranscodeOptions
    from hvt.ingest.framecheck import check_training_decode
    from hvt.ingest.transcode import transcode_video

    data, info = transcode_video(src.read_bytes(), TranscodeOptions(**parse_profile(profile)))
    verdict = check_training_decode(data, codec=info.codec, num_checks=8, tolerance=1.0)
    if not verdict.ok:
        sys.exit(f"transcoded {src.name} ({profile}) is not frame-exact: {verdict.detail}")
    dst.write_bytes(data)


def transcoded(paths: list[Path], base: str, profile: str) -> list[Path]:
    """The clips re-encoded with ``profile`` (cached under $HVT_BENCH_OUT)."""
    out_dir = OUT / f"{base}-{profile}-checked"
    out_dir.mkdir(parents=True, exist_ok=True)
    out = []
    for p in paths:
        dst = out_dir / (p.stem + ".mp4")
        if not dst.exists():
            tmp = dst.with_suffix(".tmp.mp4")
            transcode(p, tmp, profile)
            tmp.rename(dst)
        out.append(dst)
    return out


def real_clips() -> list[Path]:
    if not REAL.is_dir():
        sys.exit(f"{REAL} is missing: the benchmark needs ../shared/realdata next to the repository")
    return sorted(p for p in REAL.iterdir() if "rawvideo_dataset_part" not in p.name)  # the 10 s clips


def synth_clips(quick: bool) -> list[Path]:
    synth_dir = OUT / "synthetic340p"
    synth_dir.mkdir(parents=True, exist_ok=True)
    synth = []
    for i in range(3 if quick else 8):
        path = synth_dir / f"synthetic_{i}.mp4"
        if not path.exists():
            synthetic_clip(path, seed=i)
        synth.append(path)
    return synth


def write_set(name: str, paths: list[Path], repeats: int, shards: int = 2) -> str:
    """``shards`` shards holding every clip ``repeats`` times (same bytes, new keys), with the shown size in each
    sample's JSON as the shard writer records it (the decode actors' size hint)."""
    import av

    sizes = {}
    for p in paths:
        with av.open(str(p)) as container:
            stream = container.streams.video[0]
            sizes[p] = {"width": stream.width, "height": stream.height}
    samples = [FakeSample(f"{p.stem.replace('.', '_')}_{r}", p.read_bytes(), i % 5, ext=p.suffix[1:], meta=sizes[p])
               for r in range(repeats) for i, p in enumerate(paths)]  # fmt: skip
    parts = [samples[i::shards] for i in range(shards)]
    return write_version(str(OUT / "shards" / name), {"train": parts}, [str(i) for i in range(5)])


# ------------------------------------------------------------------------------------------- measurements


def _samples(version: str):
    for url in resolve_shard_urls(version, "train"):
        with open(url, "rb") as handle:
            yield from iter_tar_samples(handle, url)


def _row(sample) -> dict:
    return {"key": np.array([sample.key], object), "video": np.array([sample.video], object),
            "label": np.array([sample.label]), "height": np.array([int(sample.meta.get("height", 0))]),
            "width": np.array([int(sample.meta.get("width", 0))])}  # fmt: skip


def bare(version: str, config: DataConfig, stage: str) -> tuple[float, float]:
    """(clips per wall second, clips per CPU-second) of one process, one thread (decord and torch).

    ``decode-only``: tar read + sampling + decord decoding the needed frames as stored. ``decode-side``: tar
    read + exactly what a decode actor does per sample (``DecodeClips``, with the shard JSON's size hint)."""
    import torch

    torch.set_num_threads(1)
    sampler, rng = ClipSampler.from_config(config), np.random.default_rng(0)
    decode = DecodeClips(config, training=True, rng_nonce=0)
    n, start, cpu = 0, time.perf_counter(), time.process_time()
    for s in _samples(version):
        if stage == "decode-side":
            decode(_row(s))
        else:
            decode_frames(s.video, sampler, True, rng, num_threads=1)
        n += 1
    return n / (time.perf_counter() - start), n / (time.process_time() - cpu)


def device_augment_rate(version: str, config: DataConfig, batch: int = 8) -> tuple[float, float]:
    """(clips/s, clips per CPU-second) of the trainer-side augmentation on this CPU (one thread): batches of
    ``batch`` decode-side rows through ``DeviceAugment`` (clip + static clip), as the training step runs it."""
    import torch

    from hvt.data.device_augment import DeviceAugment

    torch.set_num_threads(1)
    decode = DecodeClips(config, training=True, rng_nonce=0)
    rows = [decode(_row(s)) for _, s in zip(range(batch), _samples(version), strict=False)]
    frames = torch.from_numpy(np.concatenate([r["frames"] for r in rows]))
    aug, static_aug = (np.concatenate([r[k] for r in rows]) for k in ("aug", "static_aug"))
    static_frame = np.concatenate([r["static_frame"] for r in rows])
    augment = DeviceAugment(config)
    augment(frames[:2], aug[:2])  # warm-up (kornia import, first kernels)
    n, start, cpu = 0, time.perf_counter(), time.process_time()
    for _ in range(3):
        augment(frames, aug)
        augment.static(frames, static_frame, static_aug)
        n += len(rows)
    return n / (time.perf_counter() - start), n / (time.process_time() - cpu)


def time_split(version: str, config: DataConfig, repeats: int) -> dict[str, float]:
    """Where a decode-side clip's CPU time goes (ms per clip, one thread, best of ``repeats`` passes): opening the
    reader (container + index), + decoding the sampled frames as stored, + decoding them at the size they take in
    the transfer canvas (rescaled inside the decoder only where that differs), and the whole decode-side step
    (``DecodeClips``, augment_on=device)."""
    from hvt.data.transforms import placement
    from hvt.data.video_reader import open_video

    samples = list(_samples(version))
    sampler = ClipSampler.from_config(config)
    ht, wt = config.transfer_size

    def opened(s):
        with open_video(s.video) as reader:
            return len(reader)

    def stored(s):
        with open_video(s.video) as reader:
            reader.get_batch(np.unique(sampler(len(reader), True, np.random.default_rng(0))).tolist()).asnumpy()

    def transfer(s):
        src = (int(s.meta.get("height", 0)), int(s.meta.get("width", 0)))
        transposed, placed = placement(*src, (ht, wt))
        shown = (placed[1], placed[0]) if transposed else placed
        size = {} if shown == src else {"width": shown[1], "height": shown[0]}
        with open_video(s.video, **size) as reader:
            reader.get_batch(np.unique(sampler(len(reader), True, np.random.default_rng(0))).tolist())

    decode = DecodeClips(config, training=True, rng_nonce=0)
    steps = {"open_ms": opened, "open+decode_stored_ms": stored, "open+decode_placed_ms": transfer,
             "decode_side_ms": lambda s: decode(_row(s))}  # fmt: skip
    out = {}
    for name, fn in steps.items():
        best = float("inf")
        for _ in range(repeats):
            cpu = time.process_time()
            for s in samples:
                fn(s)
            best = min(best, (time.process_time() - cpu) / len(samples) * 1000)
        out[name] = round(best, 2)
    return out


def _rss_mb(pid: int | str = "self") -> float:
    with open(f"/proc/{pid}/status") as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _actor_rss_mb() -> list[float]:
    """RSS (MB) of the Ray worker processes (``ray::...`` titles: the decode tasks' pooled workers, idle or busy)."""
    out = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as handle:
                if handle.read().startswith(b"ray::"):
                    out.append(_rss_mb(pid))
        except OSError:
            continue
    return out


class TimedDecodeClips(DecodeClips):
    """The decode actor plus ``done_at`` (when each batch left the actor, wall clock) and ``cpu_s`` (the actor's
    CPU-seconds for the batch, shared over its rows) columns."""

    def __call__(self, batch):
        cpu = time.process_time()
        out = super().__call__(batch)
        n = len(out["label"])
        out["cpu_s"] = np.full(n, (time.process_time() - cpu) / max(n, 1))
        out["done_at"] = np.full(n, time.time())
        return out


def ray_run(version: str, config: DataConfig, workers: int) -> tuple[float, float, float, list[float]]:
    """(clips/s, clips per actor CPU-second, seconds to the first decoded batch, decode-actor RSS in MB at the end).

    Ray Data hands rows over in whole task outputs, so timing at the consumer measures prefetch and start-up. The
    actors stamp each batch instead: the rate is the rows after the first batch over the time from the first
    batch's stamp to the last one, i.e. the steady streaming rate of the pool, start-up excluded.
    """
    cfg = config.model_copy(update={"decode_workers": workers, "decode_cpus": 1.0})
    ds = build_clip_dataset(version, "train", cfg, training=True, decoder=TimedDecodeClips)
    start, stamps, cpu, rss = time.time(), [], 0.0, []
    for batch in ds.iter_batches(batch_size=cfg.decode_batch_rows, batch_format="numpy"):
        stamps.extend(batch["done_at"].tolist())
        cpu += float(batch["cpu_s"].sum())
        rss = _actor_rss_mb() or rss
    stamps.sort()
    first = stamps[0]
    first_batch = sum(1 for t in stamps if t == first)
    rate = (len(stamps) - first_batch) / max(stamps[-1] - first, 1e-6)
    return rate, len(stamps) / max(cpu, 1e-9), first - start, rss


def trainer_run(version: str, config: DataConfig, steps: int) -> dict:
    """A micro HaltingVT trained in this process on batches streamed by one Ray decode actor (the real path:
    ``build_clip_dataset`` -> ``iter_torch_batches`` -> ``train_one_epoch``): the share of step time spent
    waiting for data, and clips/s. One torch thread for the trainer, one CPU for the decode actor."""
    import torch

    from hvt.config import ModelSpec, OptimConfig, TrainConfig
    from hvt.data import train_columns
    from hvt.model import create_model
    from hvt.train.loop import make_optimization
    from hvt.train.step import train_one_epoch

    torch.set_num_threads(1)
    batch_size = 4
    cfg = TrainConfig(model=ModelSpec(name="haltingvt-micro-g03-b10"), data=config,
                      optim=OptimConfig(epochs=1, batch_size=batch_size, warmup_epochs=0))  # fmt: skip
    model = create_model(cfg.model.name, num_classes=5, img_size=config.crop_size, patch_size=16,
                         num_frames=config.num_frames)  # fmt: skip
    optimizer, scheduler = make_optimization(model, cfg, steps_per_epoch=steps)
    ds = build_clip_dataset(version, "train", config, training=True).select_columns(train_columns(config))
    batches = ds.iter_torch_batches(batch_size=batch_size, drop_last=True)
    limited = (b for _, b in zip(range(steps + 1), batches, strict=False))
    next(limited)  # the first batch waits for start-up (actor, first decode): not the steady state
    stats = train_one_epoch(model, limited, optimizer, scheduler, cfg, torch.device("cpu"), config.static_clips)
    return {"clips": stats.seen, "clips_per_s": round(stats.clips_per_s, 2),
            "data_wait_share": round(stats.data_wait_share, 3)}  # fmt: skip


def memory_run(version: str, config: DataConfig, samples: int) -> dict[str, float]:
    """RSS of one process running the decode side (``DecodeClips``) over ``samples`` clips."""
    decode = DecodeClips(config, training=True, rng_nonce=1)
    readings, n = [], 0
    while n < samples:
        for s in _samples(version):
            decode(_row(s))
            n += 1
            if n % 25 == 0:
                readings.append(_rss_mb())
            if n >= samples:
                break
    warm = readings[min(1, len(readings) - 1)]
    return {"samples": n, "augment_on": config.augment_on, "rss_mb_after_50": round(warm, 1),
            "rss_mb_end": round(readings[-1], 1), "rss_mb_max": round(max(readings), 1)}  # fmt: skip


LOAD_AT_START = open("/proc/loadavg").read().split()[:3]
SWEEP = [(256, 1, 23), (256, 2, 23), (256, 4, 23), (256, 8, 23), (256, 1, 28), (256, 2, 28), (256, 1, 18),
         (320, 1, 23), (224, 1, 23)]  # fmt: skip


def _median_rate(version: str, config: DataConfig, stage: str, repeats: int) -> tuple[float, float]:
    runs = [bare(version, config, stage) for _ in range(repeats)]
    return statistics.median(r[0] for r in runs), statistics.median(r[1] for r in runs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sets, real clips only on Ray (a few minutes)")
    parser.add_argument("--json", action="store_true", help="also print the rows as JSON")
    parser.add_argument("--repeats", type=int, default=None, help="passes per bare measurement (median)")
    parser.add_argument("--profile", default=None,
                        help="transcode profile of the main rows, e.g. s256-k1-c23 (default: the shard writer's)")
    parser.add_argument("--sweep", action="store_true",
                        help="also sweep transcode profiles (short side, keyframe interval, CRF) on the real clips")
    parser.add_argument("--no-ray", action="store_true", help="skip the Ray and trainer rows")
    args = parser.parse_args()
    repeats = args.repeats or (2 if args.quick else 3)
    from hvt.ingest.config import TranscodeOptions

    default = TranscodeOptions()
    profile = args.profile or profile_name(default.short_side, default.keyint, default.crf)
    device_cfg = DataConfig()  # the paper's 8x32x1, 224 crops, RandAugment, static clips; augment_on=device
    decode_cfg = device_cfg.model_copy(update={"augment_on": "decode"})
    copies = 3 if args.quick else 6

    real, synth = real_clips(), synth_clips(args.quick)
    real_bytes = sum(p.stat().st_size for p in real)
    synth_bytes = sum(p.stat().st_size for p in synth)
    sets = {("real", "orig"): real, ("synth", "orig"): synth,
            ("real", profile): transcoded(real, "real", profile), ("synth", profile): transcoded(synth, "synth", profile)}
    if args.sweep:
        for short, keyint, crf in SWEEP:
            name = profile_name(short, keyint, crf)
            sets.setdefault(("real", name), transcoded(real, "real", name))
    rows: list[dict] = []

    def add(set_name, prof, stage, augment_on, per_core, wall, cores=1, **extra):
        original = real_bytes if set_name == "real" else synth_bytes
        ratio = sum(p.stat().st_size for p in sets[(set_name, prof)]) / original
        rows.append({"set": set_name, "profile": prof, "stage": stage, "augment_on": augment_on,
                     "clips_per_s_per_core": round(per_core, 2), "clips_per_s": round(wall, 2), "cores": cores,
                     "bytes_ratio": round(ratio, 2), **extra})  # fmt: skip
        print(f"  {set_name:5s} {prof:12s} {stage:14s} {augment_on:6s} {per_core:6.1f} clips/s/core", file=sys.stderr)

    versions = {}
    for (set_name, prof), paths in sets.items():
        versions[(set_name, prof)] = write_set(f"{set_name}-{prof}", paths, copies)
    for (set_name, prof), version in versions.items():
        main_set = prof in ("orig", profile)
        wall, per_cpu = _median_rate(version, device_cfg, "decode-only", repeats)
        add(set_name, prof, "decode-only", "-", per_cpu, wall)
        for cfg in ((decode_cfg, device_cfg) if main_set else (device_cfg,)):
            wall, per_cpu = _median_rate(version, cfg, "decode-side", repeats)
            add(set_name, prof, "decode-side", cfg.augment_on, per_cpu, wall)
    wall, per_cpu = device_augment_rate(versions[("real", profile)], device_cfg)
    add("real", profile, "device-augment", "device", per_cpu, wall, note="measured on this CPU, one thread")

    split = time_split(versions[("real", profile)], device_cfg, repeats)
    print(f"  time split (real, {profile}): {split}", file=sys.stderr)
    # resident memory of one decode process, before this process imports Ray
    memory = memory_run(versions[("real", profile)], device_cfg, 200 if args.quick else 1000)
    trainer: list[dict] = []
    if not args.no_ray:
        os.environ.setdefault("RAY_AUTH_MODE", "disabled")
        import ray

        # 2 decode actors x 1 CPU + read tasks (0.25 CPU, mostly I/O) must fit, or the reads never get scheduled
        ray.init(num_cpus=3, include_dashboard=False, log_to_driver=False, configure_logging=False)
        try:
            from ray.data import DataContext

            DataContext.get_current().enable_progress_bars = False
            for workers in (1, 2):
                for cfg in (decode_cfg, device_cfg):
                    rate, per_cpu, startup, rss = ray_run(versions[("real", profile)], cfg, workers)
                    add("real", profile, f"ray-{workers}w", cfg.augment_on, rate / workers, rate, cores=workers,
                        actor_clips_per_cpu_s=round(per_cpu, 2), startup_s=round(startup, 1),
                        actor_rss_mb=[round(r) for r in rss])
            for cfg in (decode_cfg, device_cfg):
                result = trainer_run(versions[("real", profile)], cfg.model_copy(update={"decode_cpus": 1.0}),
                                     steps=4 if args.quick else 12)
                trainer.append({"set": "real", "profile": profile, "augment_on": cfg.augment_on,
                                "model": "haltingvt-micro-g03-b10 @224", **result})
                print(f"  trainer {cfg.augment_on}: {result}", file=sys.stderr)
        finally:
            ray.shutdown()
    print(render(rows, memory, trainer))
    print(f"- where a decode-side clip's CPU time goes (real, {profile}, ms per clip, best of {repeats}): {split}")
    if args.json:
        print(json.dumps({"rows": rows, "memory": memory, "trainer": trainer, "profile": profile, "time_split": split,
                          "load_average": {"start": LOAD_AT_START, "end": open("/proc/loadavg").read().split()[:3]}},
                         indent=2))  # fmt: skip


def render(rows: list[dict], memory: dict, trainer: list[dict]) -> str:
    lines = [f"load average at the start: {LOAD_AT_START}, at the end: {open('/proc/loadavg').read().split()[:3]} "
             f"on {os.cpu_count()} cores", "",
             "| set | profile | stage | augment_on | clips/s/core | clips/s (wall) | cores | bytes_ratio |",
             "|---|---|---|---|---:|---:|---:|---:|"]  # fmt: skip
    for r in rows:
        extra = f" ({r['actor_clips_per_cpu_s']:.1f} per actor CPU-s)" if "actor_clips_per_cpu_s" in r else ""
        lines.append(f"| {r['set']} | {r['profile']} | {r['stage']} | {r['augment_on']} | "
                     f"{r['clips_per_s_per_core']:.1f}{extra} | {r['clips_per_s']:.1f} | {r['cores']} | {r['bytes_ratio']:.2f} |")  # fmt: skip
    lines.append("")
    lines.append("clips/s/core: clips per CPU-second of one process for bare rows (one thread); for ray rows, wall "
                 "clips/s per decode actor, and in brackets clips per CPU-second of the actors' own work")  # fmt: skip
    for t in trainer:
        lines.append(f"- trainer ({t['model']}, augment_on {t['augment_on']}): {t['clips_per_s']} clips/s, "
                     f"data-wait share {t['data_wait_share']}")  # fmt: skip
    lines.append(f"- memory: {memory}")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
