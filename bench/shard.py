"""How fast does `shard_dataset` turn videos into shards, with 1 and 2 local workers? And what does a new version
with 10% new videos cost next to a full shard (incremental ingest, issue 24)?

Shards a synthetic set (real H.264 files, 32 frames at 112x112) and, when ../shared/realdata exists, the real
Kinetics clips (10 s, ~426x320, full decode check); reports videos/s as the median of --repeats runs, each into a
fresh store. The times include starting the worker pool (~1-1.5 s for 2 spawned processes here), which
small runs feel and large ones amortise. Usage: python bench/shard.py [--quick] [--json] [--workers 1 2] [--transcode]

``--incremental`` measures instead, on the same sets and in the same process, the CPU time (user + system, one
inline writer) of a full shard of every video into a fresh store and of the same annotations sharded into a store
that already holds a version without 10% of the videos (drawn at random, seeded): the incremental version must process only that 10% and
cost at most 20% of the full one (``ok`` column). Medians of --repeats.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import tempfile
import time
from pathlib import Path

from hvt.ingest import ShardConfig, TranscodeOptions, shard_dataset
from hvt.ingest.synthetic import make_synthetic_dataset

REALDATA = Path(__file__).resolve().parents[1].parent / "shared" / "realdata"


def _real_copies(workdir: Path, copies: int) -> tuple[str, str]:
    """An mmaction list over ``copies`` symlinked copies of the real K400 clips (links in a temp folder only)."""
    videos = workdir / "realclips"
    lines = []
    listing = (REALDATA / "annotations/realclips_k400_videolist.txt").read_text().split("\n")
    for copy in range(copies):
        for line in filter(None, listing):
            path, label = line.rsplit(None, 1)
            link = videos / f"copy{copy}" / path
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(REALDATA / "videos" / path)
            lines.append(f"copy{copy}/{path} {label}")
    annotations = workdir / "realclips_list.txt"
    annotations.write_text("\n".join(lines) + "\n")
    return str(annotations), str(videos)


def _datasets(workdir: Path, quick: bool) -> list[tuple[str, str, str, str | None]]:
    """(name, annotations, videos, class list) to bench."""
    synth = make_synthetic_dataset(str(workdir / "synthetic"), classes=8, per_class=8 if quick else 32)
    out = [(f"synthetic {synth.num_videos} x 32f 112x112", synth.annotations_csv, synth.videos_dir, synth.classes_txt)]
    if REALDATA.is_dir():
        copies = 1 if quick else 4
        annotations, videos = _real_copies(workdir, copies)
        out.append((f"real K400 clips {10 * copies} x 10 s", annotations, videos,
                    str(REALDATA / "annotations/kinetics/label_map_k400.txt")))
    return out


def bench(quick: bool, workers: list[int], repeats: int, transcode: bool, shard_size: int) -> list[dict]:
    rows = []
    with tempfile.TemporaryDirectory(prefix="hvt-bench-shard-") as tmp:
        workdir = Path(tmp)
        for name, annotations, videos, classes in _datasets(workdir, quick):
            modes = [("copy", None)] + ([("transcode 256/k8", TranscodeOptions())] if transcode else [])
            for mode, options in modes:
                for w in workers:
                    times, result = [], None
                    for r in range(repeats):
                        store = workdir / f"store-{len(rows)}-{w}-{r}"
                        config = ShardConfig(annotations=annotations, videos=videos, store=str(store), name="bench",
                                             class_list=classes, shard_size=shard_size, workers=w,
                                             transcode=options)
                        start = time.perf_counter()
                        result = shard_dataset(config)
                        times.append(time.perf_counter() - start)
                    seconds = statistics.median(times)
                    videos_in = result.counts["input"]
                    rows.append({"dataset": name, "mode": mode, "workers": w, "videos": videos_in,
                                 "sharded": result.counts["sharded"], "seconds": round(seconds, 3),
                                 "videos_per_s": round(videos_in / seconds, 2)})
    return rows


def _cpu_seconds() -> float:
    """User + system CPU of this process and its waited-for children (spawned writers, if any)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def _timed_shard(config: ShardConfig) -> tuple[float, object]:
    start = _cpu_seconds()
    result = shard_dataset(config)
    return _cpu_seconds() - start, result


def bench_incremental(quick: bool, repeats: int, transcode: bool, shard_size: int) -> list[dict]:
    """Full shard vs. a version whose annotations add 10% new videos to an earlier version's (CPU seconds)."""
    rows = []
    with tempfile.TemporaryDirectory(prefix="hvt-bench-incremental-") as tmp:
        workdir = Path(tmp)
        for name, annotations, videos, classes in _datasets(workdir, quick):
            lines = Path(annotations).read_text().splitlines()
            header = lines[:1] if lines[0].startswith("label,") else []  # Kinetics CSV header; mmaction has none
            entries = lines[len(header):]
            earlier = workdir / f"earlier-{len(rows)}.txt"
            # 10% drawn at random (seeded): not always the same clip of each real copy, whose lengths differ
            new = set(random.Random(0).sample(range(len(entries)), max(1, round(len(entries) / 10))))
            earlier.write_text("\n".join(header + [e for i, e in enumerate(entries) if i not in new]) + "\n")
            modes = [("copy", None)] + ([("transcode 256/k1", TranscodeOptions())] if transcode else [])
            for mode, options in modes:
                full, incremental, result = [], [], None
                base = ShardConfig(annotations=annotations, videos=videos, store=str(workdir), name="bench",
                                   class_list=classes, shard_size=shard_size, transcode=options)
                for r in range(repeats):
                    def config(ann: str, store: str, base: ShardConfig = base) -> ShardConfig:
                        return base.model_copy(update={"annotations": ann, "store": str(workdir / store)})

                    # the earlier version first: the full run's figure then holds no first-import costs
                    shard_dataset(config(str(earlier), f"inc-{len(rows)}-{r}"))
                    full.append(_timed_shard(config(annotations, f"full-{len(rows)}-{r}"))[0])
                    seconds, result = _timed_shard(config(annotations, f"inc-{len(rows)}-{r}"))
                    incremental.append(seconds)
                ratio = statistics.median(incremental) / statistics.median(full)
                rows.append({"dataset": name, "mode": mode, "videos": result.counts["input"],
                             "processed": result.processed, "reused": result.reused,
                             "full_cpu_s": round(statistics.median(full), 2),
                             "incremental_cpu_s": round(statistics.median(incremental), 2),
                             "ratio": round(ratio, 3), "ok": ratio <= 0.2})
    return rows


def _print_incremental(rows: list[dict]) -> None:
    header = (f"| {'dataset':<34} | {'mode':<16} | videos | processed | reused | full CPU s | incremental CPU s "
              "| ratio | <= 20% |")
    print(header)
    print("|" + "|".join("-" * (len(c)) for c in header.split("|")[1:-1]) + "|")
    for row in rows:
        print(f"| {row['dataset']:<34} | {row['mode']:<16} | {row['videos']:>6} | {row['processed']:>9} "
              f"| {row['reused']:>6} | {row['full_cpu_s']:>10.2f} | {row['incremental_cpu_s']:>17.2f} "
              f"| {row['ratio']:>5.3f} | {'yes' if row['ok'] else 'NO':>6} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer synthetic clips, one repeat")
    parser.add_argument("--json", action="store_true", help="print rows as JSON lines")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--repeats", type=int, default=None, help="runs per row (median); default 3, --quick 1")
    parser.add_argument("--transcode", action="store_true", help="also bench transcoding at shard time")
    parser.add_argument("--shard-size", type=int, default=2, help="samples per shard (default 2: many small shards)")
    parser.add_argument("--incremental", action="store_true",
                        help="CPU time of a version with 10%% new videos vs a full shard, instead of throughput")
    args = parser.parse_args()
    repeats = args.repeats or (1 if args.quick else 3)
    if args.incremental:
        rows = bench_incremental(args.quick, repeats, args.transcode, args.shard_size)
        if args.json:
            for row in rows:
                print(json.dumps(row))
        else:
            _print_incremental(rows)
        return
    rows = bench(args.quick, args.workers, repeats, args.transcode, args.shard_size)
    if args.json:
        for row in rows:
            print(json.dumps(row))
        return
    header = f"| {'dataset':<34} | {'mode':<16} | workers | videos | seconds | videos/s |"
    print(header)
    print("|" + "|".join("-" * (len(c)) for c in header.split("|")[1:-1]) + "|")
    for row in rows:
        print(f"| {row['dataset']:<34} | {row['mode']:<16} | {row['workers']:>7} | {row['videos']:>6} "
              f"| {row['seconds']:>7.2f} | {row['videos_per_s']:>8.1f} |")


if __name__ == "__main__":
    main()
