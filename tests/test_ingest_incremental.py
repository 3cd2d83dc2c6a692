"""Incremental ingest (issue 24, test b): a new version of a dataset processes only its new or changed videos and
equals a from-scratch shard of the same annotations.

What is identical, and asserted: the version id, the manifest apart from shard digests, the quarantine file, and for
every shard its keys in order; for every sample its label, every metadata field but ``sha256`` (the digest of the
stored bytes) and every frame the training decoder reads. Not asserted: byte-identical tars, because a reused sample
keeps the earlier version's re-encode while a from-scratch shard encodes again, and libx264 output is not promised
to be bit-reproducible (``tests/test_ingest_resume.py``). Reused samples are asserted to be the earlier bytes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from test_ingest_helpers import manifest_shards, read_tar

import hvt.ingest.writer as writer
from hvt.data.video_reader import read_frames
from hvt.ingest import ShardConfig, ShardResult, TranscodeOptions, shard_dataset
from hvt.ingest.synthetic import make_synthetic_dataset

pytestmark = pytest.mark.timeout(180)

BROKEN_ID = "brokenclip0"  # a row whose file is not a video: quarantined as corrupt


@dataclass
class Scenario:
    videos: str
    classes: str
    day1: Path  # annotations of version 1
    day2: Path  # version 2: three new rows, one changed label, one dropped row, two videos changed
    new: set[str]
    relabelled: str
    dropped: str
    replaced: str  # another clip's bytes under this name (another size)
    touched: str  # one header byte changed: the same size and frames, another sha256


def _key(row: str) -> str:
    _, ytid, start, end, _ = row.split(",")
    return f"{ytid}_{int(start):06d}_{int(end):06d}"


@pytest.fixture
def scenario(tmp_path: Path) -> Scenario:
    made = make_synthetic_dataset(str(tmp_path / "data"), classes=2, per_class=8, frames=16, size=(64, 48))
    header, *rows = Path(made.annotations_csv).read_text().splitlines()
    (Path(made.videos_dir) / f"{BROKEN_ID}_000000_000010.mp4").write_bytes(b"\x00\x01 not a video " * 64)
    broken = f"{made.class_names[0]},{BROKEN_ID},0,10,train"
    old, new = rows[:-3], rows[-3:]
    dropped, relabelled, replaced, touched = old[0], old[1], old[2], old[3]
    day1 = tmp_path / "day1.csv"
    day1.write_text("\n".join([header, *old, broken]) + "\n")
    label, rest = relabelled.split(",", 1)
    other = next(name for name in made.class_names if name != label)
    day2 = tmp_path / "day2.csv"
    day2.write_text("\n".join([header, *old[3:], f"{other},{rest}", replaced, broken, *new]) + "\n")
    return Scenario(made.videos_dir, made.classes_txt, day1, day2, {_key(r) for r in new}, _key(relabelled),
                    _key(dropped), _key(replaced), _key(touched))


def _shard(scene: Scenario, annotations: Path, store: Path, **overrides) -> ShardResult:
    config = ShardConfig(annotations=str(annotations), videos=scene.videos, store=str(store), name="grows",
                         class_list=scene.classes, shard_size=4, transcode=TranscodeOptions(short_side=32))
    return shard_dataset(config.model_copy(update=overrides))


def _processed_keys(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Keys of the entries whose video goes through probe / frame check / transcode from now on."""
    seen: list[str] = []
    real = writer._prepare_sample

    def spy(data: bytes, entry: dict, task: writer.ShardTask) -> tuple[bytes, dict]:
        seen.append(entry["key"])
        return real(data, entry, task)

    monkeypatch.setattr(writer, "_prepare_sample", spy)
    return seen


def _samples(result: ShardResult) -> dict[str, list[tuple[str, dict, bytes]]]:
    """shard name -> [(key, metadata, video bytes)] in tar order."""
    manifest = json.loads(Path(result.manifest_url).read_text())
    out = {}
    for shard in manifest_shards(manifest):
        samples = read_tar((Path(result.path) / shard["name"]).read_bytes())
        out[shard["name"]] = [(key, s["json"], s["video"]) for key, s in samples.items()]
    return out


def _without_digests(manifest_url: str) -> dict:
    manifest = json.loads(Path(manifest_url).read_text())
    for split in manifest["splits"].values():
        split.pop("bytes")
        for shard in split["shards"]:
            shard.pop("sha256"), shard.pop("bytes")
    return manifest


def test_new_version_processes_only_new_videos_and_equals_a_full_shard(
    scenario: Scenario, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = tmp_path / "store"
    first = _shard(scenario, scenario.day1, store)
    assert (first.processed, first.reused, first.reused_quarantined) == (14, 0, 0)
    assert first.counts["by_reason"] == {"corrupt": 1}
    day1 = _samples(first)
    day1_bytes = {key: video for shard in day1.values() for key, _, video in shard}
    # the replaced video: same name, other content (another clip's bytes)
    replaced = Path(scenario.videos) / f"{scenario.replaced}.mp4"
    replaced.write_bytes((Path(scenario.videos) / f"{scenario.dropped}.mp4").read_bytes())
    touched = Path(scenario.videos) / f"{scenario.touched}.mp4"
    header = bytearray(touched.read_bytes())
    assert header[4:8] == b"ftyp"
    header[15] ^= 1  # the ftyp box's minor version: no decoder reads it
    touched.write_bytes(bytes(header))
    changed = scenario.new | {scenario.replaced, scenario.touched}

    processed = _processed_keys(monkeypatch)
    second = _shard(scenario, scenario.day2, store)
    assert sorted(processed) == sorted(changed)  # nothing else probed, frame-checked or re-encoded
    assert (second.processed, second.reused, second.reused_quarantined) == (5, 10, 1)
    assert second.reused_from == [first.version]
    assert second.counts == {"input": 16, "sharded": 15, "quarantined": 1, "by_reason": {"corrupt": 1}}

    processed.clear()
    scratch = _shard(scenario, scenario.day2, tmp_path / "scratch")
    assert len(processed) == 16 and scratch.processed == 16 and scratch.reused == 0

    assert second.version == scratch.version
    assert _without_digests(second.manifest_url) == _without_digests(scratch.manifest_url)
    assert (Path(second.path) / "quarantine.jsonl").read_bytes() == (Path(scratch.path) / "quarantine.jsonl").read_bytes()
    incremental, reference = _samples(second), _samples(scratch)
    assert {name: [k for k, _, _ in s] for name, s in incremental.items()} == \
        {name: [k for k, _, _ in s] for name, s in reference.items()}
    by_key = {key: (meta, video) for shard in reference.values() for key, meta, video in shard}
    assert scenario.dropped not in by_key
    for shard in incremental.values():
        for key, meta, video in shard:
            ref_meta, ref_video = by_key[key]
            assert {**meta, "sha256": None} == {**ref_meta, "sha256": None}, key
            count, frames = read_frames(video, list(range(meta["num_frames"])))
            ref_count, ref_frames = read_frames(ref_video, list(range(ref_meta["num_frames"])))
            assert count == ref_count and np.array_equal(frames, ref_frames), key
            if key not in changed:
                assert video == day1_bytes[key], key  # reused: the stored bytes of version 1, not a new encode
    day1_meta = {key: meta for shard in day1.values() for key, meta, _ in shard}
    day2_meta = {key: meta for shard in incremental.values() for key, meta, _ in shard}
    assert day2_meta[scenario.relabelled]["label"] != day1_meta[scenario.relabelled]["label"]  # this row's label


def test_quarantine_verdicts_are_repeated_unless_asked_and_settings_changes_reuse_nothing(
    scenario: Scenario, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = tmp_path / "store"
    first = _shard(scenario, scenario.day1, store)
    processed = _processed_keys(monkeypatch)

    retried = _shard(scenario, scenario.day1, store, version="retry", retry_quarantined=True)
    assert processed == [f"{BROKEN_ID}_000000_000010"]
    assert (retried.processed, retried.reused, retried.reused_quarantined) == (1, 13, 0)
    assert retried.counts == first.counts

    processed.clear()
    other = _shard(scenario, scenario.day1, store, transcode=TranscodeOptions(short_side=40))
    assert len(processed) == 14 and (other.processed, other.reused) == (14, 0)  # another recipe: nothing matches


def test_a_damaged_earlier_sample_is_processed_again(scenario: Scenario, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    store = tmp_path / "store"
    first = _shard(scenario, scenario.day1, store)
    index = [json.loads(line) for line in (Path(first.path) / "reuse-index.jsonl").read_text().splitlines()]
    victim = next(row for row in index if "tar" in row and row["key"] not in (scenario.dropped, scenario.replaced))
    tar = Path(first.path) / victim["tar"]
    data = bytearray(tar.read_bytes())
    data[victim["end"] - 600] ^= 0xFF  # inside the video member (the last member of the sample, padded < 512)
    tar.write_bytes(bytes(data))
    processed = _processed_keys(monkeypatch)

    second = _shard(scenario, scenario.day2, store)
    assert sorted(processed) == sorted(scenario.new | {victim["key"]})
    assert (second.processed, second.reused) == (4, 11)


def test_cli_prints_what_was_processed_and_reused(scenario: Scenario, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    from hvt.commands.shard import main

    argv = ["--annotations", str(scenario.day1), "--videos", scenario.videos, "--store", str(tmp_path / "s"),
            "--name", "grows", "--class-list", scenario.classes, "--shard-size", "4", "--quiet"]
    assert main(argv) == 0
    assert "videos: 14 processed, 0 reused\n" in capsys.readouterr().out
    day2 = [*argv[:1], str(scenario.day2), *argv[2:]]
    assert main(day2) == 0
    out = capsys.readouterr().out
    assert "videos: 3 processed, 12 reused from v-" in out and "1 quarantine verdicts repeated" in out
    assert main([*day2, "--no-reuse", "--version", "full", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert (summary["processed"], summary["reused"], summary["reused_from"]) == (16, 0, [])


@pytest.mark.integration
def test_incremental_version_on_s3(scenario: Scenario, tmp_path: Path) -> None:
    """Videos and store on a real S3 server; the second version's shards are written by two processes, which take
    the reused samples as ranged reads of the first version's tars."""
    import s3fs
    from s3server import seaweedfs_server

    from hvt.store_check import check_store

    with seaweedfs_server(tmp_path) as s3:
        fs = s3fs.S3FileSystem()
        fs.put(scenario.videos + "/", f"{s3.bucket}/raw/", recursive=True)
        for day in (scenario.day1, scenario.day2):
            fs.put(str(day), f"{s3.bucket}/{day.name}")
        store = f"s3://{s3.bucket}/store"

        def shard(day: Path, **overrides) -> ShardResult:
            return shard_dataset(ShardConfig(annotations=f"s3://{s3.bucket}/{day.name}", videos=f"s3://{s3.bucket}/raw",
                                             store=store, name="grows", class_list=scenario.classes, shard_size=4,
                                             **overrides))

        first = shard(scenario.day1)
        second = shard(scenario.day2, workers=2)
        assert (second.processed, second.reused, second.reused_quarantined) == (3, 12, 1)
        assert second.reused_from == [first.version]

        def stored(result: ShardResult) -> dict[str, bytes]:
            manifest = json.loads(fs.cat_file(result.manifest_url.removeprefix("s3://")))
            tars = [fs.cat_file(f"{result.path.removeprefix('s3://')}/{s['name']}") for s in manifest_shards(manifest)]
            return {key: sample["video"] for data in tars for key, sample in read_tar(data).items()}

        before, after = stored(first), stored(second)
        assert len(after) == 15 and all(after[key] == before[key] for key in after.keys() - scenario.new)
        report = check_store(store)
        assert report.healthy and report.datasets == 2, report.as_dict()["findings"]


def test_real_clips_re_encoded(realdata: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The real UCF101 clips (two MPEG-4 AVIs and an H.264 mp4), every one re-encoded: a version adding one clip
    processes that clip only and stores what a from-scratch run stores."""
    listing = (realdata / "annotations/realclips_ucf101_videolist.txt").read_text().splitlines()
    classes = str(realdata / "annotations/other_label_maps/ucf101_label_map.txt")
    first_list, full_list = tmp_path / "first.txt", tmp_path / "full.txt"
    first_list.write_text("\n".join(listing[:2]) + "\n")
    full_list.write_text("\n".join(listing) + "\n")

    def shard(annotations: Path, store: str) -> ShardResult:
        return shard_dataset(ShardConfig(annotations=str(annotations), format="mmaction", name="ucf",
                                         videos=str(realdata / "videos"), store=str(tmp_path / store),
                                         class_list=classes, shard_size=2,
                                         transcode=TranscodeOptions(short_side=96)))

    first = shard(first_list, "store")
    processed = _processed_keys(monkeypatch)
    second = shard(full_list, "store")
    scratch = shard(full_list, "scratch")
    assert (second.processed, second.reused, scratch.processed) == (1, 2, 3)
    assert processed[0] not in {key for shard in _samples(first).values() for key, _, _ in shard}
    incremental, reference = _samples(second), _samples(scratch)
    assert _without_digests(second.manifest_url) == _without_digests(scratch.manifest_url)
    ref = {key: (meta, video) for shard in reference.values() for key, meta, video in shard}
    for shard in incremental.values():
        for key, meta, video in shard:
            assert {**meta, "sha256": None} == {**ref[key][0], "sha256": None}, key
            frames = read_frames(video, list(range(meta["num_frames"])))[1]
            assert np.array_equal(frames, read_frames(ref[key][1], list(range(meta["num_frames"])))[1]), key
            assert meta["normalised"] and meta["source_codec"] in ("mpeg4", "h264") and meta["height"] == 96, key
