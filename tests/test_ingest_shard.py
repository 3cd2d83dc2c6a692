"""Sharding on a local store: sample format, determinism, resume, accounting, versions, CLI."""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import shutil
from pathlib import Path

import pytest
from test_ingest_helpers import manifest_shards, read_quarantine, read_tar

from hvt.commands import shard as shard_command
from hvt.ingest import (
    ShardConfig,
    TranscodeOptions,
    latest_dataset_version,
    list_dataset_versions,
    load_manifest,
    shard_dataset,
    shard_urls,
)
from hvt.ingest.probe import probe_video
from hvt.ingest.synthetic import make_synthetic_dataset


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("synthetic")
    return make_synthetic_dataset(str(root), classes=3, per_class=6, frames=12, size=(64, 48), seed=1)


def _config(synthetic, store: Path, **overrides) -> ShardConfig:
    base = dict(annotations=synthetic.annotations_csv, videos=synthetic.videos_dir, store=str(store),
                name="synth", class_list=synthetic.classes_txt, shard_size=4)
    return ShardConfig(**{**base, **overrides})


def test_shards_hold_every_sample_with_its_metadata(synthetic, tmp_path: Path) -> None:
    result = shard_dataset(_config(synthetic, tmp_path))
    assert result.counts == {"input": 18, "sharded": 18, "quarantined": 0, "by_reason": {}}
    assert result.version.startswith("v-") and len(result.version) == 14
    assert result.path == str(tmp_path / "datasets" / "synth" / result.version)
    manifest = json.loads(Path(result.manifest_url).read_text())
    assert manifest["classes"] == synthetic.class_names
    # 3 classes x 6, 2 of each class in val: 12 train (3 shards of 4) + 6 val (4 + 2)
    assert [(s["name"], s["samples"]) for s in manifest_shards(manifest)] == [
        ("train-000000.tar", 4), ("train-000001.tar", 4), ("train-000002.tar", 4), ("val-000000.tar", 4),
        ("val-000001.tar", 2)]
    assert manifest["splits"]["train"]["samples"] == 12 and manifest["splits"]["val"]["samples"] == 6

    with open(synthetic.annotations_csv, newline="") as handle:
        expected = {f"{r['youtube_id']}_{int(r['time_start']):06d}_{int(r['time_end']):06d}": r
                    for r in csv.DictReader(handle)}
    seen = {}
    for shard in manifest_shards(manifest):
        data = (Path(result.path) / shard["name"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == shard["sha256"] and len(data) == shard["bytes"]
        samples = read_tar(data)
        assert len(samples) == shard["samples"]
        assert (Path(result.path) / shard["name"].replace(".tar", ".stats.json")).exists()
        for key, sample in samples.items():
            meta = sample["json"]
            row = expected[key]
            assert meta["label_name"] == row["label"]
            assert meta["label"] == synthetic.class_names.index(row["label"])
            assert meta["split"] == row["split"] == shard["split"]
            assert meta["youtube_id"] == row["youtube_id"]
            assert meta["time_start"] == int(row["time_start"]) and meta["time_end"] == int(row["time_end"])
            assert meta["sha256"] == hashlib.sha256(sample["video"]).hexdigest()
            assert sample["video"] == Path(meta["source"]).read_bytes()  # untouched source bytes
            assert (meta["container"], meta["codec"], sample["ext"]) == ("mp4", "h264", "mp4")
            assert (meta["num_frames"], meta["width"], meta["height"], meta["fps"]) == (12, 64, 48, 8.0)
            assert meta["duration"] == pytest.approx(1.5)
            seen[key] = shard["name"]
    assert set(seen) == set(expected)
    # class-balanced-ish: the seeded shuffle mixes classes inside the first train shard
    first = read_tar((Path(result.path) / "train-000000.tar").read_bytes())
    assert len({s["json"]["label"] for s in first.values()}) > 1
    assert (Path(result.path) / "quarantine.jsonl").read_text() == ""


def test_same_inputs_same_bytes_and_seed_changes_order(synthetic, tmp_path: Path) -> None:
    a = shard_dataset(_config(synthetic, tmp_path / "a"))
    b = shard_dataset(_config(synthetic, tmp_path / "b", workers=2))  # process pool, same output
    c = shard_dataset(_config(synthetic, tmp_path / "c", seed=5))
    assert a.version == b.version != c.version
    for name in ["manifest.json", "quarantine.jsonl", "train-000000.tar", "val-000000.tar"]:
        assert (Path(a.path) / name).read_bytes() == (Path(b.path) / name).read_bytes(), name
    keys_a = list(read_tar((Path(a.path) / "train-000000.tar").read_bytes()))
    keys_c = list(read_tar((Path(c.path) / "train-000000.tar").read_bytes()))
    assert keys_a != keys_c


def test_rerun_skips_finished_shards_and_rewrites_broken_ones(synthetic, tmp_path: Path) -> None:
    first = shard_dataset(_config(synthetic, tmp_path))
    manifest = Path(first.manifest_url).read_bytes()
    version_json = (Path(first.path) / "version.json").read_bytes()
    again = shard_dataset(_config(synthetic, tmp_path))
    assert (again.shards_written, again.shards_skipped) == (0, 5)
    # a crash between a tar and its stats, and a truncated tar: both are redone
    (Path(first.path) / "train-000001.stats.json").unlink()
    tar = Path(first.path) / "train-000002.tar"
    tar.write_bytes(tar.read_bytes()[:1000])
    Path(first.manifest_url).unlink()
    third = shard_dataset(_config(synthetic, tmp_path))
    assert (third.shards_written, third.shards_skipped) == (2, 3)
    assert Path(first.manifest_url).read_bytes() == manifest
    assert (Path(first.path) / "version.json").read_bytes() == version_json  # created_at kept


def test_versions_api(synthetic, tmp_path: Path) -> None:
    assert list_dataset_versions(str(tmp_path), "synth") == []
    assert latest_dataset_version(str(tmp_path), "synth") is None
    old = shard_dataset(_config(synthetic, tmp_path))
    # an unfinished version (no manifest) does not exist
    (tmp_path / "datasets" / "synth" / "v-unfinished").mkdir()
    (tmp_path / "datasets" / "synth" / "v-unfinished" / "train-000000.tar").write_bytes(b"x")
    new = shard_dataset(_config(synthetic, tmp_path, shard_size=100))
    versions = list_dataset_versions(str(tmp_path), "synth")
    assert [v.version for v in versions] == [old.version, new.version]
    latest = latest_dataset_version(str(tmp_path), "synth")
    assert latest is not None and latest.version == new.version and latest.num_samples == 18
    manifest = load_manifest(str(tmp_path), "synth", new.version)
    assert manifest["parameters"]["shard_size"] == 100
    urls = shard_urls(latest.manifest_url, "train")
    assert urls == [str(Path(new.path) / "train-000000.tar")]
    assert len(shard_urls(old.manifest_url, "train")) == 3
    with pytest.raises(KeyError, match="splits: train, val"):
        shard_urls(old.manifest_url, "test")
    with pytest.raises(FileNotFoundError, match="no committed version"):
        load_manifest(str(tmp_path), "synth", "v-unfinished")


def test_shard_bytes_limit(synthetic, tmp_path: Path) -> None:
    size = max(p.stat().st_size for p in Path(synthetic.videos_dir).iterdir())
    result = shard_dataset(_config(synthetic, tmp_path, shard_size=None, shard_bytes=2 * size, split="train"))
    manifest = json.loads(Path(result.manifest_url).read_text())
    assert {s["split"] for s in manifest_shards(manifest)} == {"train"}
    assert result.counts["input"] == 12 == result.counts["sharded"]
    assert all(2 <= s["samples"] for s in manifest_shards(manifest)[:-1])
    for shard in manifest_shards(manifest):
        videos = read_tar((Path(result.path) / shard["name"]).read_bytes()).values()
        assert sum(len(v["video"]) for v in videos) <= 2 * size


def test_bad_entries_are_quarantined_and_counted(synthetic, tmp_path: Path) -> None:
    videos = tmp_path / "videos"
    shutil.copytree(synthetic.videos_dir, videos)
    some = sorted(videos.iterdir())
    some[0].write_bytes(some[0].read_bytes()[: 600])  # truncated: header only
    some[1].write_bytes(b"")  # empty
    (videos / "notes.txt").write_text("not a video")
    rows = Path(synthetic.annotations_csv).read_text().splitlines()
    first = rows[1].split(",")
    rows += [
        ",".join(first),  # the same clip again
        "no such class," + ",".join(first[1:]),
        "moving left,AAAAAAAAAAA,1,11,train",  # no such video
        "moving left,BBBBBBBBBBB,x,y,train",  # unparseable times
    ]
    annotations = tmp_path / "annotations.csv"
    annotations.write_text("\n".join(rows) + "\n")
    result = shard_dataset(_config(synthetic, tmp_path / "store", annotations=str(annotations),
                                   videos=str(videos)))
    counts = result.counts
    assert counts["input"] == 22
    assert counts["by_reason"] == {"bad_annotation": 1, "corrupt": 1, "duplicate": 1, "missing": 1,
                                   "no_frames": 1, "unknown_label": 1}
    assert counts["sharded"] == 16 and counts["sharded"] + counts["quarantined"] == counts["input"]
    records = read_quarantine(Path(result.path) / "quarantine.jsonl")
    assert [r["line"] for r in records] == sorted(r["line"] for r in records)
    by_reason = {r["reason"]: r for r in records}
    assert by_reason["duplicate"]["line"] == 19 and "line 1" in by_reason["duplicate"]["detail"]
    assert by_reason["missing"]["youtube_id"] == "AAAAAAAAAAA"
    assert by_reason["corrupt"]["source"].endswith(some[0].name)
    manifest = json.loads(Path(result.manifest_url).read_text())
    assert manifest["quarantine"]["entries"] == 6
    assert manifest["counts"] == counts


def test_transcode_at_shard_time(synthetic, tmp_path: Path) -> None:
    options = TranscodeOptions(short_side=32, keyint=4, crf=30)
    result = shard_dataset(_config(synthetic, tmp_path, split="val", transcode=options, shard_size=10))
    samples = read_tar((Path(result.path) / "val-000000.tar").read_bytes())
    assert len(samples) == 6
    for sample in samples.values():
        meta = sample["json"]
        assert (meta["width"], meta["height"], meta["container"], meta["codec"]) == (42, 32, "mp4", "h264")
        assert meta["num_frames"] == 12
        assert meta["source_sha256"] == hashlib.sha256(Path(meta["source"]).read_bytes()).hexdigest()
        assert meta["sha256"] == hashlib.sha256(sample["video"]).hexdigest() != meta["source_sha256"]
        info = probe_video(sample["video"], ext="mp4", min_frames=1)
        assert (info.width, info.height, info.num_frames) == (42, 32, 12)
    assert result.version != shard_dataset(_config(synthetic, tmp_path, split="val", shard_size=10)).version


def test_min_frames(synthetic, tmp_path: Path) -> None:
    result = shard_dataset(_config(synthetic, tmp_path, min_frames=13))
    assert result.counts["by_reason"] == {"too_short": 18} and result.counts["sharded"] == 0
    assert json.loads(Path(result.manifest_url).read_text())["splits"] == {}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hvt")
    shard_command.register(parser.add_subparsers(dest="command", required=True))
    return parser


def test_cli_json_and_text(synthetic, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["shard", "--annotations", synthetic.annotations_csv, "--videos", synthetic.videos_dir,
            "--store", str(tmp_path), "--name", "synth", "--shard-size", "8", "--workers", "1", "--json"]
    args = _parser().parse_args(argv)
    assert args.func(args) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["counts"] == {"input": 18, "sharded": 18, "quarantined": 0, "by_reason": {}}
    assert out["path"] == str(tmp_path / "datasets" / "synth" / out["version"])
    args = _parser().parse_args(argv[:-1] + ["--split", "val"])
    assert args.func(args) == 0
    text = capsys.readouterr().out
    assert "dataset version:" in text and "entries: 6  sharded: 6  quarantined: 0" in text


def test_cli_reports_bad_arguments(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = _parser().parse_args(["shard", "--annotations", "a.csv", "--videos", str(tmp_path), "--store",
                                 str(tmp_path), "--name", "../evil"])
    assert args.func(args) == 2
    assert "dataset name" in capsys.readouterr().err
    missing = tmp_path / "none.csv"
    args = _parser().parse_args(["shard", "--annotations", str(missing), "--videos", str(tmp_path),
                                 "--store", str(tmp_path), "--name", "x"])
    assert args.func(args) == 1
    assert "none.csv" in capsys.readouterr().err


def test_transient_read_errors_are_retried_and_persistent_ones_quarantined(
    synthetic, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from hvt.ingest import writer

    real_read = writer.storage.read_bytes
    calls: dict[str, int] = {}

    def flaky(url: str) -> bytes:
        if not url.startswith(synthetic.videos_dir):
            return real_read(url)
        calls[url] = calls.get(url, 0) + 1
        if url.endswith(sorted(Path(synthetic.videos_dir).iterdir())[0].name):
            raise ConnectionResetError("connection reset by peer")  # never recovers
        if calls[url] <= 2:
            raise TimeoutError("read timed out")  # recovers on the third try
        return real_read(url)

    monkeypatch.setattr(writer.storage, "read_bytes", flaky)
    monkeypatch.setattr(writer.time, "sleep", lambda s: None)
    result = shard_dataset(_config(synthetic, tmp_path, retries=3))
    assert result.counts["sharded"] == 17 and result.counts["by_reason"] == {"unreadable": 1}
    assert len(calls) == 18 and all(n in (3, 4) for n in calls.values())  # 2 failures + success, or 1 + 3 retries


def test_training_side_reads_these_shards(synthetic, tmp_path: Path) -> None:
    """The contract with hvt.data: it finds the shards through the manifest and reads label + video bytes."""
    data_shards = pytest.importorskip("hvt.data.shards")
    result = shard_dataset(_config(synthetic, tmp_path))
    urls = data_shards.resolve_shard_urls(result.path, "train")
    assert urls == shard_urls(result.manifest_url, "train") and len(urls) == 3
    assert data_shards.read_manifest_classes(result.path) == synthetic.class_names
    labels = []
    for url in urls:
        with open(url, "rb") as handle:
            for sample in data_shards.iter_tar_samples(handle, url):
                assert not sample.read_error and sample.video[4:8] == b"ftyp"  # an mp4
                labels.append(sample.label)
    assert sorted(labels) == sorted([i for i in range(3) for _ in range(4)])


def test_latest_version_is_the_later_commit_within_one_second(tmp_path: Path) -> None:
    """Two versions committed back to back (an incremental re-shard takes well under a second) whose ids sort the
    other way: "latest" is the one committed last, not the larger id; an older record with whole seconds sorts
    before a later one with microseconds in that second."""
    from hvt.ingest.versions import MANIFEST, commit_version, version_path

    def commit(version: str) -> None:
        path = version_path(str(tmp_path), "synth", version)
        Path(path).mkdir(parents=True)
        (Path(path) / MANIFEST).write_text(json.dumps({"counts": {"sharded": 1}}))
        commit_version(path, "synth", version, "0" * 64)

    for version in ("v-ffff", "v-eeee", "v-dddd"):
        commit(version)
    assert [v.version for v in list_dataset_versions(str(tmp_path), "synth")] == ["v-ffff", "v-eeee", "v-dddd"]
    assert latest_dataset_version(str(tmp_path), "synth").version == "v-dddd"

    first = json.loads((tmp_path / "datasets" / "synth" / "v-ffff" / "version.json").read_text())
    (tmp_path / "datasets" / "synth" / "v-ffff" / "version.json").write_text(json.dumps(
        {**first, "created_at": first["created_at"][:19] + "+00:00"}))  # as versions written before microseconds
    assert list_dataset_versions(str(tmp_path), "synth")[0].version == "v-ffff"
