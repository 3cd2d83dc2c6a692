"""Segments of whole videos (cut, or segment_out_of_range) and sample keys a tar can hold (none lost): checked
with videos that carry their frame index (framecode) and with the webdataset library reading the shards."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest
from framecode import inputs, read_code, shown_codes, write_coded_video

from hvt.data import DataConfig
from hvt.data.shards import iter_tar_samples
from hvt.data.video_reader import read_frames
from hvt.ingest import ShardConfig, shard_dataset

FPS = 10


def _kinetics(path: Path, rows: list[tuple[str, str, int, int, str]]) -> Path:
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["label", "youtube_id", "time_start", "time_end", "split"])
        writer.writerows(rows)
    return path


def _samples(version: Path) -> dict[str, dict]:
    out = {}
    for tar in sorted(version.glob("*.tar")):
        with open(tar, "rb") as handle:
            for sample in iter_tar_samples(handle, str(tar)):
                assert not sample.read_error, sample.read_error
                out[sample.key] = {"meta": sample.meta, "video": sample.video}
    return out


def _quarantine(version: Path) -> dict[str, dict]:
    lines = (version / "quarantine.jsonl").read_text().splitlines()
    return {json.loads(line)["youtube_id"]: json.loads(line) for line in lines}


@pytest.fixture(scope="module")
def segment_set(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Whole videos named <ytid>.mp4 and trimmed ones, listed with segments inside, outside and equal."""
    root = tmp_path_factory.mktemp("segments")
    videos = root / "videos"
    videos.mkdir()
    write_coded_video(videos / "wholevideo1.mp4", 120, fps=FPS)  # 12 s, frame k carries k
    shutil.copy(videos / "wholevideo1.mp4", videos / "wholevideo2.mp4")
    shutil.copy(videos / "wholevideo1.mp4", videos / "wholevideo3.mp4")
    two_seconds = inputs() / "two_seconds.mp4"
    shutil.copy(two_seconds, videos / "twoseconds1.mp4")  # listed 300-310: not this video
    shutil.copy(two_seconds, videos / "trimmedclip_000300_000302.mp4")  # trimmed: kept as it is
    shutil.copy(two_seconds, videos / "segmentlen1.mp4")  # as long as its segment: already trimmed
    rows = [
        ("a", "wholevideo1", 3, 5, "train"),  # inside: cut to frames 30..49
        ("a", "wholevideo2", 10, 20, "train"),  # runs 8 s past the end
        ("b", "wholevideo3", 0, 12, "train"),  # the whole video
        ("b", "twoseconds1", 300, 310, "train"),
        ("a", "trimmedclip", 300, 302, "train"),
        ("b", "segmentlen1", 100, 102, "train"),
    ]
    return _kinetics(root / "k.csv", rows), videos


def test_whole_videos_are_cut_to_their_segment_or_quarantined(segment_set, tmp_path: Path) -> None:
    annotations, videos = segment_set
    result = shard_dataset(ShardConfig(annotations=str(annotations), videos=str(videos), store=str(tmp_path),
                                       name="seg"))
    assert result.counts["by_reason"] == {"segment_out_of_range": 2}
    quarantined = _quarantine(Path(result.path))
    assert set(quarantined) == {"wholevideo2", "twoseconds1"}
    assert "300-310 s" in quarantined["twoseconds1"]["detail"]
    samples = _samples(Path(result.path))
    cut = samples["wholevideo1_000003_000005"]
    assert cut["meta"]["normalised"] and cut["meta"]["segment_frames"] == [30, 50]
    assert cut["meta"]["num_frames"] == 20 and cut["meta"]["duration"] == pytest.approx(2.0)
    n, frames = read_frames(cut["video"], list(range(20)))  # the training decoder on what is stored
    assert n == 20 and [read_code(f) for f in frames] == list(range(30, 50))
    for key, frames_shown in [("wholevideo3_000000_000012", 120), ("trimmedclip_000300_000302", 50),
                              ("segmentlen1_000100_000102", 50)]:
        meta = samples[key]["meta"]
        assert not meta["normalised"] and meta["segment_frames"] is None
        assert shown_codes(samples[key]["video"]) == list(range(frames_shown))


def test_without_transcoding_a_whole_video_is_not_trained_on_whole(segment_set, tmp_path: Path) -> None:
    annotations, videos = segment_set
    result = shard_dataset(ShardConfig(annotations=str(annotations), videos=str(videos), store=str(tmp_path),
                                       name="seg", transcode_policy="never"))
    assert result.counts["by_reason"] == {"segment_out_of_range": 2, "untrimmed": 1}
    assert "transcoding is off" in _quarantine(Path(result.path))["wholevideo1"]["detail"]


# ---------------------------------------------------------------- keys


ODD_NAMES = ["__NrybzYzUg", "-7tDxxH2g6I", ".starts_with_dot", "many.dots.in.name", "with space", "ünïcödé_名前",
             "__meta__", "plain"]


@pytest.fixture(scope="module")
def odd_keys(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("keys")
    videos = root / "videos"
    videos.mkdir()
    lines = []
    for i, name in enumerate(ODD_NAMES):
        write_coded_video(videos / f"{name}.mp4", 16, size=(64, 48), first_index=i)
        lines.append(f"{name}.mp4 {i % 2}")
    # the same ids as YouTube ids in a Kinetics CSV (keys <ytid>_<start>_<end>), in a val split
    ytids = ["__NrybzYzUg", "-7tDxxH2g6I"]
    for ytid in ytids:
        write_coded_video(videos / f"{ytid}_000010_000020.mp4", 16, size=(64, 48))
    (root / "list.txt").write_text("\n".join(lines) + "\n")
    (root / "classes.txt").write_text("a\nb\n")
    listed = shard_dataset(ShardConfig(annotations=str(root / "list.txt"), format="mmaction", videos=str(videos),
                                       class_list=str(root / "classes.txt"), store=str(root / "store"),
                                       name="odd", shard_size=3))
    kinetics = _kinetics(root / "k.csv", [("a", y, 10, 20, "val") for y in ytids] + [("b", "-7tDxxH2g6I", 10, 20, "train")])
    by_ytid = shard_dataset(ShardConfig(annotations=str(kinetics), videos=str(videos), store=str(root / "store"),
                                        name="ytids", class_list=str(root / "classes.txt")))
    return listed, by_ytid


def test_every_key_a_tar_can_hold_is_sharded_and_read_back(odd_keys) -> None:
    import webdataset

    for result in odd_keys:
        manifest = json.loads(Path(result.manifest_url).read_text())
        assert result.counts["quarantined"] == result.counts["by_reason"].get("duplicate", 0)
        for split, entry in manifest["splits"].items():
            tars = [str(Path(result.path) / shard["path"]) for shard in entry["shards"]]
            ours = [key for tar in tars for key in _samples_keys(tar)]
            theirs = [s["__key__"] for s in webdataset.WebDataset(tars, shardshuffle=False)]
            assert sorted(ours) == sorted(theirs) and len(ours) == entry["samples"], split
    keys = {k for tar in Path(odd_keys[1].path).glob("*.tar") for k in _samples_keys(str(tar))}
    assert "__NrybzYzUg_000010_000020" in keys and "-7tDxxH2g6I_000010_000020" in keys
    assert odd_keys[0].counts["sharded"] == len(ODD_NAMES)


def _samples_keys(tar: str) -> list[str]:
    with open(tar, "rb") as handle:
        return [s.key for s in iter_tar_samples(handle, tar)]


@pytest.mark.integration
@pytest.mark.timeout(300)
def test_training_dataset_yields_or_counts_every_manifest_sample(odd_keys, shared_ray) -> None:
    """The invariant, per split: samples the training dataset yields + decode failures = samples in the manifest."""
    from hvt.data import build_clip_dataset

    config = DataConfig(num_frames=4, frame_interval=2, crop_size=32, train_short_side=(40, 48), test_short_side=40,
                        decode_workers=1, decode_cpus=0.5, decode_batch_rows=2, shuffle_buffer=2)
    for result in odd_keys:
        manifest = json.loads(Path(result.manifest_url).read_text())
        for split, entry in manifest["splits"].items():
            for training in (True, False):
                rows = build_clip_dataset(result.path, split, config, training=training).select_columns(
                    ["key", "decode_ok"]).take_all()
                ok = sum(bool(r["decode_ok"]) for r in rows)
                assert ok + (len(rows) - ok) == entry["samples"] == len({r["key"] for r in rows})
                assert ok == entry["samples"], (split, training)  # these all decode
