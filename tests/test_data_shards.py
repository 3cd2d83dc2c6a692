"""Reading shards without Ray: samples from tar streams, bounded shuffling, manifest resolution."""

import io
import json
import tarfile

import numpy as np
import pytest

from hvt.data import read_manifest_classes, resolve_shard_urls
from hvt.data.ray_dataset import _pyarrow_filesystem
from hvt.data.shards import buffer_shuffle, iter_tar_samples
from hvt.data.testing import FakeSample, write_shard, write_version


def _tar_bytes(members):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def test_tar_samples_group_members_and_flag_bad_metadata_without_unpickling():
    raw = _tar_bytes(
        [
            ("a.mp4", b"AAAA"),
            ("a.json", json.dumps({"label": 3}).encode()),
            ("sub/b.c.mkv", b"BB"),  # key is everything before the first dot of the basename
            ("sub/b.c.json", json.dumps({"label": "1"}).encode()),
            ("c.mp4", b"CC"),  # no metadata
            ("d.json", b"{not json"),
            ("d.avi", b"DD"),
            ("e.json", json.dumps({"label": 0}).encode()),  # no video member
            ("e.pkl", b"\x80\x04K\x01."),  # never unpickled, never taken for a video
        ]
    )
    samples = list(iter_tar_samples(io.BytesIO(raw), "mem://x.tar"))
    assert [s.key for s in samples] == ["a", "sub/b", "c", "d", "e"]
    a, b, c, d, e = samples
    assert (a.video, a.ext, a.label, a.read_error) == (b"AAAA", "mp4", 3, "")
    assert (b.video, b.ext, b.label, b.read_error) == (b"BB", "c.mkv", 1, "")
    assert c.label == -1 and "no .json" in c.read_error
    assert d.label == -1 and "bad .json" in d.read_error and d.video == b"DD"
    assert e.video == b"" and "no video member" in e.read_error


def test_truncated_tar_keeps_what_it_holds_and_reports_the_tail(tmp_path):
    samples = [FakeSample(f"k{i}", bytes([i]) * 3000, i) for i in range(4)]
    path = tmp_path / "s.tar"
    write_shard(str(path), samples)
    raw = path.read_bytes()
    # members: k0.mp4 [0, 3584), k0.json [3584, 4608), k1.mp4 [4608, 8192), ...
    out = list(iter_tar_samples(io.BytesIO(raw[:6000]), "s.tar"))  # cut inside k1.mp4
    assert [s.key for s in out] == ["k0", "s.tar#truncated"] and out[0].video == samples[0].video
    assert out[0].read_error == "" and out[1].read_error.startswith("unreadable shard tail")
    out = list(iter_tar_samples(io.BytesIO(raw[:8192]), "s.tar"))  # cut between k1.mp4 and k1.json
    assert [s.key for s in out] == ["k0", "k1"] and "no .json member" in out[1].read_error


def test_buffer_shuffle_is_a_bounded_permutation():
    items = list(range(200))
    out = list(buffer_shuffle(items, 16, np.random.default_rng(0)))
    assert sorted(out) == items and out != items
    positions = {v: i for i, v in enumerate(out)}
    assert all(positions[v] >= v - 16 for v in items)  # nothing leaves before it entered the 16-slot buffer
    again = list(buffer_shuffle(items, 16, np.random.default_rng(0)))
    assert again == out  # same seed, same order (Ray's read retries replay exactly)
    assert list(buffer_shuffle(items, 0, np.random.default_rng(0))) == items


def test_manifest_resolution_and_classes(tmp_path):
    version = write_version(
        str(tmp_path / "v1"),
        {
            "train": [[FakeSample("a", b"x", 0)], [FakeSample("b", b"y", 1)]],
            "val": [[FakeSample("c", b"z", 1)]],
        },
        ["archery", "yoga"],
    )
    assert resolve_shard_urls(version, "train") == [
        f"{version}/train-000000.tar",
        f"{version}/train-000001.tar",
    ]
    assert read_manifest_classes(version) == ["archery", "yoga"]
    assert resolve_shard_urls(["s3://b/p/x.tar"], "train") == ["s3://b/p/x.tar"]
    with pytest.raises(KeyError, match="split 'test' not in"):
        resolve_shard_urls(version, "test")
    with pytest.raises(FileNotFoundError, match="not a dataset version"):
        resolve_shard_urls(str(tmp_path / "nothing"), "train")


def test_s3_urls_become_protocol_less_paths_on_an_fsspec_backed_filesystem():
    import pyarrow.fs as pafs

    paths, fs = _pyarrow_filesystem(
        ["s3://bucket/ds/v1/train-000000.tar", "s3://bucket/ds/v1/train-000001.tar"], None
    )
    assert paths == ["bucket/ds/v1/train-000000.tar", "bucket/ds/v1/train-000001.tar"]
    assert isinstance(fs, pafs.PyFileSystem)
    local, none = _pyarrow_filesystem(["/data/a.tar"], None)
    assert local == ["/data/a.tar"] and none is None
    with pytest.raises(ValueError, match="mix stores"):
        _pyarrow_filesystem(["s3://b/a.tar", "/data/b.tar"], None)
