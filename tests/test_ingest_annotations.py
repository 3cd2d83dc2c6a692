"""Annotation readers, format detection, video resolution and sample keys, on small hand-made inputs."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import pytest
from test_ingest_helpers import realdata

from hvt.ingest import ShardConfig, shard_dataset
from hvt.ingest.annotations import (
    AnnotationEntry,
    AnnotationError,
    detect_format,
    read_annotations,
    read_class_list,
)
from hvt.ingest.plan import sample_key
from hvt.ingest.videoindex import VideoIndex


def _write(path: Path, text: str) -> str:
    path.write_text(text)
    return str(path)


@pytest.mark.parametrize(
    "text, fmt",
    [
        ("label,youtube_id,time_start,time_end,split\nyoga,Tw2yXa6CzWE,491,501,val\n", "kinetics_csv"),
        ("zkyy5cC7SL4\n-7tDxxH2g6I\n", "s3d_ids"),
        ("images/val/air drumming/7LSJ2Ryv1a8_000000_000010 60 0\n", "arnet"),
        ("kinetics/a b.mp4 3\nucf/x.avi 7\n", "mmaction"),
    ],
)
def test_detect_format(tmp_path: Path, text: str, fmt: str) -> None:
    assert detect_format(_write(tmp_path / "a.txt", text)) == fmt


def test_detect_format_refuses_to_guess(tmp_path: Path) -> None:
    with pytest.raises(AnnotationError, match="pass format="):
        detect_format(_write(tmp_path / "a.txt", "hello world\nthis is prose\n"))
    with pytest.raises(AnnotationError, match="empty"):
        detect_format(_write(tmp_path / "b.txt", "\n\n"))


def test_mmaction_reader_flags_bad_lines(tmp_path: Path) -> None:
    path = _write(tmp_path / "val_list.txt", "a/x.mp4 1\nb/y.mp4 0 3\nno-label-here\nc/abcdefghijk_000001_000011.mkv 2\n")
    entries = list(read_annotations(path, "mmaction"))
    assert [(e.line, e.path, e.label, e.split) for e in entries if not e.error] == [
        (1, "a/x.mp4", 1, "val"), (4, "c/abcdefghijk_000001_000011.mkv", 2, "val")]
    assert entries[-1].youtube_id == "abcdefghijk" and entries[-1].time_end == 11
    assert "multi-label" in entries[1].error and "expected" in entries[2].error


def test_kinetics_csv_requires_columns(tmp_path: Path) -> None:
    with pytest.raises(AnnotationError, match="needs a header"):
        list(read_annotations(_write(tmp_path / "a.csv", "name,id\nx,y\n"), "kinetics_csv"))


def test_class_list_plain_and_numbered(tmp_path: Path) -> None:
    assert read_class_list(_write(tmp_path / "a.txt", "b c\na\n\n")) == ["b c", "a"]
    assert read_class_list(_write(tmp_path / "classInd.txt", "2 Basketball\n1 ApplyEyeMakeup\n")) == [
        "ApplyEyeMakeup", "Basketball"]


def test_video_index_resolves_usual_names(tmp_path: Path) -> None:
    root = tmp_path / "videos"
    for rel in ["train/yoga/AAAAAAAAAAA_000010_000020.mp4", "train/yoga/AAAAAAAAAAA_000010_000020.webm",
                "val/BBBBBBBBBBB.mkv", "CCCCCCCCCCC_5_15.avi", "ucf/v_X_g01.avi", "clips/z.gif",
                ".hidden/DDDDDDDDDDD.mp4", "EEEEEEEEEEE.mp4.part", "images/val/air drumming/FFFFFFFFFFF_000000_000010.mp4"]:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(b"x" * 3)
    index = VideoIndex(str(root))
    resolve = index.resolve
    assert resolve(AnnotationEntry(1, youtube_id="AAAAAAAAAAA", time_start=10, time_end=20)) == (
        "train/yoga/AAAAAAAAAAA_000010_000020.mp4")  # mp4 preferred over webm
    assert resolve(AnnotationEntry(1, youtube_id="BBBBBBBBBBB", time_start=1, time_end=11)) == "val/BBBBBBBBBBB.mkv"
    assert resolve(AnnotationEntry(1, youtube_id="CCCCCCCCCCC", time_start=5, time_end=15)) == "CCCCCCCCCCC_5_15.avi"
    assert resolve(AnnotationEntry(1, path="ucf101/ucf/v_X_g01.avi")) == "ucf/v_X_g01.avi"  # leading folder dropped
    assert resolve(AnnotationEntry(1, path="v_X_g01.avi")) == "ucf/v_X_g01.avi"  # by file name
    assert resolve(AnnotationEntry(1, path="clips/z.gif")) == "clips/z.gif"  # found; rejected later by type
    assert resolve(AnnotationEntry(1, path="images/val/air drumming/FFFFFFFFFFF_000000_000010")) == (
        "images/val/air drumming/FFFFFFFFFFF_000000_000010.mp4")
    assert resolve(AnnotationEntry(1, youtube_id="DDDDDDDDDDD")) is None  # hidden files are not videos
    assert resolve(AnnotationEntry(1, youtube_id="EEEEEEEEEEE")) is None  # partial downloads neither
    assert resolve(AnnotationEntry(1, path="../videos/ucf/v_X_g01.avi")) is None  # no traversal
    assert index.sizes["ucf/v_X_g01.avi"] == 3


@pytest.mark.parametrize(
    "entry, rel, expected",
    [
        (AnnotationEntry(1, youtube_id="-7tDxxH2g6I", time_start=16, time_end=26), "x.mp4", "-7tDxxH2g6I_000016_000026"),
        (AnnotationEntry(1, path="ucf/v_X_g01.avi"), "ucf/v_X_g01.avi", None),
        (AnnotationEntry(1, path="../../etc/passwd"), "../../etc/passwd.mp4", None),
        (AnnotationEntry(1, path="a.b.c"), "a.b.c.mp4", None),
    ],
)
def test_sample_keys_are_safe_and_deterministic(entry: AnnotationEntry, rel: str, expected: str | None) -> None:
    key = sample_key(entry, rel)
    assert key == sample_key(entry, rel)
    if expected is not None:
        assert key == expected
    assert key and all(c.isalnum() or c in "_-" for c in key) and len(key) <= 80


def test_sample_keys_stay_unique_after_sanitising() -> None:
    keys = {sample_key(AnnotationEntry(1), rel) for rel in ["a/b.mp4", "a_b.mp4", "a.b.mp4", "a b.mp4"]}
    assert len(keys) == 4


def test_hostile_file_names_shard_safely(tmp_path: Path) -> None:
    from hvt.ingest.synthetic import make_synthetic_dataset

    ds = make_synthetic_dataset(str(tmp_path / "d"), classes=1, per_class=2, frames=8, size=(32, 32))
    videos = sorted(Path(ds.videos_dir).iterdir())
    weird = tmp_path / "v" / "we ird..dir"
    weird.mkdir(parents=True)
    (weird / "a.b;c.mp4").write_bytes(videos[0].read_bytes())
    (weird / "a_b_c.mp4").write_bytes(videos[1].read_bytes())
    listing = _write(tmp_path / "list.txt", "we ird..dir/a.b;c.mp4 0\nwe ird..dir/a_b_c.mp4 0\n../../etc/passwd.mp4 0\n")
    result = shard_dataset(ShardConfig(annotations=listing, videos=str(tmp_path / "v"), store=str(tmp_path / "s"),
                                       name="weird", format="mmaction"))
    assert result.counts["sharded"] == 2 and result.counts["by_reason"] == {"missing": 1}
    import tarfile

    with tarfile.open(Path(result.path) / "train-000000.tar") as tar:
        names = tar.getnames()
    assert len(names) == 4
    for name in names:
        key, ext = name.split(".")
        assert ext in ("mp4", "json") and "/" not in key


def test_planning_memory_stays_small(tmp_path: Path) -> None:
    """19,906 K400 entries: the quarantine streams to disk, nothing per entry stays in memory."""
    real = realdata()
    (tmp_path / "videos").mkdir()
    config = ShardConfig(annotations=str(real / "annotations/kinetics/kinetics-400_val.csv"),
                         videos=str(tmp_path / "videos"), store=str(tmp_path / "s"), name="k400")
    tracemalloc.start()
    try:
        result = shard_dataset(config)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert result.counts["quarantined"] == 19906
    assert peak < 16 * 2**20, f"peak {peak / 2**20:.1f} MiB"
