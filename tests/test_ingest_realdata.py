"""Sharding the real clips and parsing the real annotation files of ../shared/realdata (never copied here)."""

from __future__ import annotations

import csv
import json
import time
from pathlib import Path

import pytest
from test_ingest_helpers import manifest_shards, read_quarantine, read_tar, realdata

from hvt.ingest import ShardConfig, shard_dataset
from hvt.ingest.annotations import detect_format, read_annotations, read_class_list

K400_CLASSES = "annotations/kinetics/label_map_k400.txt"
MINIK_CLASSES = "annotations/minikinetics_arnet_adafuse/minik_classInd.txt"


@pytest.fixture(scope="module")
def real() -> Path:
    return realdata()


def _samples(result) -> dict[str, dict]:
    """source path -> sample (json + video bytes) over every shard of the version."""
    manifest = json.loads(Path(result.manifest_url).read_text())
    out = {}
    for shard in manifest_shards(manifest):
        for sample in read_tar((Path(result.path) / shard["name"]).read_bytes()).values():
            out[sample["json"]["source"]] = sample
    return out


def _realclips_plus_bad_files(real: Path, tmp_path: Path) -> tuple[Path, list[dict]]:
    """realclips_k400.csv plus rows for the corrupt clip, the GIF, an avi and an mp4 from the GIF."""
    with open(real / "annotations/realclips_k400.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    fields = list(rows[0])
    extra = [
        {"label": "yoga", "file": "videos/other/decord__tests_test_data_corrupted.mp4", "k400_index": "398"},
        {"label": "playing cricket", "file": "videos/ucf101/kinetics-i3d__v_CricketShot_g04_c01_rgb.gif",
         "k400_index": "227"},
        {"label": "playing cricket", "file": "videos/ucf101/kinetics-i3d__v_CricketShot_g04_c01_rgb_from_gif.mp4",
         "k400_index": "227"},
        {"label": "exercising arm", "file": "videos/other/realtime-action-recog__exercise.avi", "k400_index": "119"},
    ]
    rows += [{f: e.get(f, "") for f in fields} for e in extra]
    path = tmp_path / "realclips_plus.csv"
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    return path, rows


def test_real_clips_land_with_k400_labels_and_bad_ones_are_quarantined(real: Path, tmp_path: Path) -> None:
    annotations, rows = _realclips_plus_bad_files(real, tmp_path)
    result = shard_dataset(ShardConfig(annotations=str(annotations), videos=str(real / "videos"),
                                       store=str(tmp_path / "store"), name="realclips",
                                       class_list=str(real / K400_CLASSES), shard_size=5, workers=2))
    counts = result.counts
    assert counts["input"] == len(rows) == 14
    assert counts["by_reason"] == {"corrupt": 1, "unsupported_container": 1}
    assert counts["sharded"] + counts["quarantined"] == counts["input"]
    assert counts["sharded"] == 12

    samples = _samples(result)
    assert len(samples) == 12
    videos = real / "videos"
    for row in rows:
        source = str(videos / row["file"].removeprefix("videos/"))
        if "corrupted" in source or source.endswith(".gif"):
            assert source not in samples
            continue
        meta = samples[source]["json"]
        assert meta["label"] == int(row["k400_index"]), source
        assert meta["label_name"] == row["label"]
        assert samples[source]["video"] == Path(source).read_bytes()
        assert meta["num_frames"] >= 8 and meta["width"] > 0 and meta["fps"] > 0
    official = samples[str(videos / "kinetics/uniformer__Tw2yXa6CzWE.mp4")]["json"]
    assert (official["key"], official["split"], official["youtube_id"]) == (
        "Tw2yXa6CzWE_000491_000501", "val", "Tw2yXa6CzWE")
    mkv = samples[str(videos / "kinetics/decord__examples_flipping_a_pancake.mkv")]
    assert (mkv["ext"], mkv["json"]["container"], mkv["json"]["codec"]) == ("mkv", "mkv", "h264")
    assert 300 <= mkv["json"]["num_frames"] <= 320  # no count in the header: counted by decoding
    avi = samples[str(videos / "other/realtime-action-recog__exercise.avi")]
    assert (avi["ext"], avi["json"]["codec"], avi["json"]["num_frames"]) == ("avi", "mpeg4", 393)
    short = samples[str(videos / "kinetics/mmaction2__tests_data_rawvideo_dataset_part_0.mp4")]["json"]
    assert short["num_frames"] == 32 and short["label_name"] == "cleaning pool"
    portrait = samples[str(videos / "kinetics/ask-anything__making_cake.mp4")]["json"]
    assert (portrait["width"], portrait["height"]) == (320, 426)
    for key in (s["json"]["key"] for s in samples.values()):
        assert "/" not in key and "." not in key

    records = {r["reason"]: r for r in read_quarantine(Path(result.path) / "quarantine.jsonl")}
    assert records["corrupt"]["source"].endswith("decord__tests_test_data_corrupted.mp4")
    assert "decoding failed after" in records["corrupt"]["detail"]  # the header looked fine
    assert records["unsupported_container"]["source"].endswith(".gif")


def test_real_clips_with_mini_kinetics_labels(real: Path, tmp_path: Path) -> None:
    """The AR-Net Mini-Kinetics-200 class list: K400 classes outside it are quarantined as unknown_label."""
    result = shard_dataset(ShardConfig(annotations=str(real / "annotations/realclips_k400.csv"),
                                       videos=str(real / "videos"), store=str(tmp_path), name="minik",
                                       class_list=str(real / MINIK_CLASSES), decode_check="head"))
    with open(real / "annotations/realclips_k400.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    in_minik = [r for r in rows if r["arnet_minik_index"]]
    assert result.counts["sharded"] == len(in_minik) == 8
    assert result.counts["by_reason"] == {"unknown_label": 2}
    samples = _samples(result)
    for row in in_minik:
        meta = samples[str(real / row["file"])]["json"]
        assert meta["label"] == int(row["arnet_minik_index"])
    unknown = {r["label_name"] for r in read_quarantine(Path(result.path) / "quarantine.jsonl")}
    assert unknown == {"abseiling", "hitting baseball"}


@pytest.mark.parametrize(
    "listing, classes, expected_labels",
    [
        ("realclips_minik_arnet_videolist.txt", MINIK_CLASSES, None),
        ("realclips_ucf101_videolist.txt", "annotations/other_label_maps/ucf101_label_map.txt",
         {"ApplyEyeMakeup", "Basketball", "CricketShot"}),
    ],
)
def test_mmaction_lists(real: Path, tmp_path: Path, listing: str, classes: str, expected_labels) -> None:
    annotations = real / "annotations" / listing
    assert detect_format(str(annotations)) == "mmaction"
    result = shard_dataset(ShardConfig(annotations=str(annotations), videos=str(real / "videos"),
                                       store=str(tmp_path), name="mm", class_list=str(real / classes),
                                       decode_check="head"))
    lines = [line.rsplit(None, 1) for line in annotations.read_text().splitlines() if line.strip()]
    assert result.counts["input"] == len(lines) == result.counts["sharded"]
    samples = _samples(result)
    names = read_class_list(str(real / classes))
    for path, label in lines:
        meta = samples[str(real / "videos" / path)]["json"]
        assert meta["label"] == int(label) and meta["label_name"] == names[int(label)]
    if expected_labels:
        assert {s["json"]["label_name"] for s in samples.values()} == expected_labels


def test_plan_full_k400_val_without_videos(real: Path, tmp_path: Path) -> None:
    (tmp_path / "videos").mkdir()
    start = time.perf_counter()
    result = shard_dataset(ShardConfig(annotations=str(real / "annotations/kinetics/kinetics-400_val.csv"),
                                       videos=str(tmp_path / "videos"), store=str(tmp_path / "store"),
                                       name="k400", class_list=str(real / K400_CLASSES)))
    elapsed = time.perf_counter() - start
    assert result.counts == {"input": 19906, "sharded": 0, "quarantined": 19906, "by_reason": {"missing": 19906}}
    assert elapsed < 30, f"planning 19,906 entries took {elapsed:.1f}s"
    records = read_quarantine(Path(result.path) / "quarantine.jsonl")
    assert len(records) == 19906 and [r["line"] for r in records] == list(range(1, 19907))
    assert records[0]["youtube_id"] == "0wR5jVB-WPk" and records[0]["split"] == "val"


def test_arnet_val_list_detected_with_class_list_beside(real: Path, tmp_path: Path) -> None:
    listing = real / "annotations/minikinetics_arnet_adafuse/mini_val_videofolder.txt"
    assert detect_format(str(listing)) == "arnet"
    entries = list(read_annotations(str(listing)))
    assert len(entries) == 9867  # `wc -l` says 9866: the last line has no newline
    assert not any(e.error for e in entries)
    first = entries[0]
    assert (first.youtube_id, first.time_start, first.time_end, first.label, first.split) == (
        "7LSJ2Ryv1a8", 0, 10, 0, "val")
    assert first.label_name == "air drumming"  # the class folder, with its space
    result = shard_dataset(ShardConfig(annotations=str(listing), videos=str(real / "videos"),
                                       store=str(tmp_path), name="minik-val"))
    assert result.counts["by_reason"] == {"missing": 9867}
    manifest = json.loads(Path(result.manifest_url).read_text())
    assert manifest["num_classes"] == 200 and manifest["classes"][199] == "yoga"
    assert manifest["source"]["class_list"].endswith("minik_classInd.txt")


def test_s3d_ids_joined_with_kinetics_csv(real: Path, tmp_path: Path) -> None:
    s3d = real / "annotations/minikinetics_s3d"
    ids = s3d / "val_ytid_list.txt"
    assert detect_format(str(ids)) == "s3d_ids"
    labels = str(s3d / "DERIVED_val_5000_kinetics_csv_format.csv")
    entries = list(read_annotations(str(ids), labels_csv=[labels]))
    assert len(entries) == 5000 and all(e.split == "val" for e in entries)
    assert (entries[0].youtube_id, entries[0].label_name, entries[0].time_start) == ("zkyy5cC7SL4", "belly dancing", 0)
    (tmp_path / "videos").mkdir()
    result = shard_dataset(ShardConfig(annotations=str(ids), videos=str(tmp_path / "videos"),
                                       store=str(tmp_path / "store"), name="s3d", labels_csv=[labels]))
    assert result.counts["by_reason"] == {"missing": 5000}
    manifest = json.loads(Path(result.manifest_url).read_text())
    assert manifest["num_classes"] == 200


def test_kinetics_csv_reader_on_the_official_file(real: Path) -> None:
    path = str(real / "annotations/kinetics/kinetics-400_val.csv")
    assert detect_format(path) == "kinetics_csv"
    entries = read_annotations(path)
    first = next(entries)
    assert (first.label_name, first.youtube_id, first.time_start, first.time_end, first.split) == (
        "abseiling", "0wR5jVB-WPk", 417, 427, "val")
    assert sum(1 for _ in entries) == 19905


def test_probe_looks_at_bytes_not_names(real: Path) -> None:
    """A GIF named .mp4 is still unsupported; the corrupt clip's header looks fine but decoding breaks."""
    from hvt.ingest.probe import probe_video
    from hvt.ingest.reasons import Quarantined

    gif = (real / "videos/ucf101/kinetics-i3d__v_CricketShot_g04_c01_rgb.gif").read_bytes()
    with pytest.raises(Quarantined) as exc:
        probe_video(gif, ext="mp4", min_frames=8)
    assert exc.value.reason == "unsupported_container"
    corrupt = (real / "videos/other/decord__tests_test_data_corrupted.mp4").read_bytes()
    info = probe_video(corrupt, ext="mp4", min_frames=8, full_decode=False)  # the head decodes fine ...
    assert info.num_frames == 50
    with pytest.raises(Quarantined) as exc:
        probe_video(corrupt, ext="mp4", min_frames=8)  # ... the full check does not
    assert exc.value.reason == "corrupt"
    short = (real / "videos/kinetics/mmaction2__tests_data_rawvideo_dataset_part_0.mp4").read_bytes()
    with pytest.raises(Quarantined) as exc:
        probe_video(short, ext="mp4", min_frames=33)
    assert exc.value.reason == "too_short" and "32 frames" in exc.value.detail
    with pytest.raises(Quarantined) as exc:
        probe_video(corrupt[:2000], ext="mp4", min_frames=8)
    assert exc.value.reason in ("corrupt", "no_frames")
