"""How fast does `shard_dataset` turn videos into shards, with 1 and 2 local workers?

Shards a synthetic set (real H.264 files, 32 frames at 112x112) and, when ../shared/realdata exists, the real
Kinetics clips (10 s, ~426x320, full decode check); reports videos/s as the median of --repeats runs, each into a
fresh store. The times include starting the worker pool (~1-1.5 s for 2 spawned processes here), which
small runs feel and large ones amortise. Usage: python bench/shard.py [--quick] [--json] [--workers 1 2] [--transcode]
"""

from __future__ import annotations

import argparse
import json
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


def bench(quick: bool, workers: list[int], repeats: int, transcode: bool) -> list[dict]:
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
                                             class_list=classes, shard_size=2, workers=w, transcode=options)
                        start = time.perf_counter()
                        result = shard_dataset(config)
                        times.append(time.perf_counter() - start)
                    seconds = statistics.median(times)
                    videos_in = result.counts["input"]
                    rows.append({"dataset": name, "mode": mode, "workers": w, "videos": videos_in,
                                 "sharded": result.counts["sharded"], "seconds": round(seconds, 3),
                                 "videos_per_s": round(videos_in / seconds, 2)})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer synthetic clips, one repeat")
    parser.add_argument("--json", action="store_true", help="print rows as JSON lines")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--repeats", type=int, default=None, help="runs per row (median); default 3, --quick 1")
    parser.add_argument("--transcode", action="store_true", help="also bench transcoding at shard time")
    args = parser.parse_args()
    repeats = args.repeats or (1 if args.quick else 3)
    rows = bench(args.quick, args.workers, repeats, args.transcode)
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
