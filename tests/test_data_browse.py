"""`hvt browse`: what the model sees, read back with the frame code of ../shared/inputs (the clip frames hold the
frames the npz names) and through the CLI (--json shape, failures counted, one-line errors)."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from framecode import INPUT_FILES, inputs, is_upright, read_code, shown_codes
from PIL import Image

from hvt.cli import main
from hvt.data.testing import FakeSample, write_version
from hvt.ingest import ShardConfig, shard_dataset

READABLE = [n for n in sorted(INPUT_FILES) if n != "av1.mp4"]  # the AV1 file's code is blurred past reading


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("browse")
    videos = root / "videos"
    videos.mkdir()
    for name in INPUT_FILES:
        shutil.copy(inputs() / name, videos / name)
    (root / "list.txt").write_text("".join(f"{name} {i % 2}\n" for i, name in enumerate(sorted(INPUT_FILES))))
    (root / "classes.txt").write_text("even\nodd\n")
    shard_dataset(ShardConfig(annotations=str(root / "list.txt"), format="mmaction", videos=str(videos),
                              class_list=str(root / "classes.txt"), store=str(root / "store"), name="inputs",
                              default_split="val", shard_size=4))
    bad = FakeSample("garbage", b"not a video at all " * 50, 1)
    good = FakeSample("good", (inputs() / "frame_index_h264.mp4").read_bytes(), 0)
    write_version(str(root / "store" / "datasets" / "mixed" / "v1"), {"val": [[good, bad]]}, ["even", "odd"])
    return root / "store"


@dataclass
class _Run:
    returncode: int
    stdout: str
    stderr: str


@pytest.fixture
def browse(capfd):
    """``hvt browse ARGS`` in this process (the CLI's main), with file-descriptor-level stdout/stderr."""

    def run(*args: str) -> _Run:
        capfd.readouterr()
        code = main(["browse", *args])
        out, err = capfd.readouterr()
        return _Run(code, out, err)

    return run


@pytest.mark.parametrize("train", [False, True])
def test_browse_writes_the_frames_the_sampler_chose(store: Path, tmp_path: Path, train: bool, browse) -> None:
    config = tmp_path / "train.json"
    data = {"num_frames": 8, "frame_interval": 4, "crop_size": 96, "test_short_side": 96,
            "train_short_side": [96, 96], "randaugment": False, "flip": False}
    config.write_text(json.dumps({"data": data}))
    args = ["--store", str(store), "--dataset", "inputs", "--out", str(tmp_path / "out"), "--json",
            "--config", str(config)] + (["--train", "--split", "val"] if train else [])
    proc = browse(*args)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["decode_failures"] == 0
    by_key = {s["key"]: s for s in report["samples"]}
    assert set(by_key) == {n.rsplit(".", 1)[0] for n in INPUT_FILES}
    for name in READABLE:
        sample = by_key[name.rsplit(".", 1)[0]]
        assert sample["decode_ok"] and sample["label_name"] in ("even", "odd")
        npz = np.load(sample["npz"])
        clip, indices = npz["clip"], npz["frame_indices"]
        assert clip.shape == (8, 96, 96, 3) and clip.dtype == np.uint8 and indices.tolist() == sample["frame_indices"]
        carried = shown_codes((inputs() / name).read_bytes())
        assert [read_code(f) for f in clip] == [carried[i] for i in indices], name
        if not train:
            assert all(is_upright(f) for f in clip)
        assert Image.open(sample["png"]).size[0] >= 8 * 96


def test_browse_counts_what_does_not_decode_and_keeps_the_rest(store: Path, tmp_path: Path, browse) -> None:
    proc = browse("--store", str(store), "--dataset", "mixed", "--out", str(tmp_path), "--json",
                   "--sampling", "4x4x2", "--limit", "5")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["decode_failures"] == 1
    good, bad = report["samples"]
    assert good["decode_ok"] and np.load(good["npz"])["clip"].shape == (2, 4, 224, 224, 3)
    assert np.asarray(good["frame_indices"]).shape == (2, 4)
    assert not bad["decode_ok"] and bad["png"] is None and bad["npz"] is None
    assert "not a video" not in proc.stderr  # decoder noise never echoes the input's bytes


def test_browse_errors_are_one_line(store: Path, tmp_path: Path, browse) -> None:
    for args, words in [(["--dataset", "nope"], "no committed version"),
                        (["--dataset", "inputs", "--split", "test"], "split 'test'"),
                        (["--dataset", "inputs", "--version", "v-x"], "no version")]:
        proc = browse("--store", str(store), "--out", str(tmp_path), *args)
        assert proc.returncode == 2 and words in proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr


def test_browse_train_shows_the_clip_a_training_decode_actor_makes(store: Path, tmp_path: Path, browse) -> None:
    from hvt.data import DataConfig
    from hvt.data.browse import iter_split_samples
    from hvt.data.decode import DecodeClips
    from hvt.data.device_augment import augment_row

    proc = browse("--store", str(store), "--dataset", "inputs", "--out", str(tmp_path), "--json", "--train",
                  "--split", "val", "--limit", "2", "--sampling", "4x8x1", "--epoch", "3")
    assert proc.returncode == 0, proc.stderr
    samples = json.loads(proc.stdout)["samples"]
    version = next((store / "datasets" / "inputs").glob("v-*"))
    config = DataConfig.for_sampling("4x8x1")
    actor = DecodeClips(config, training=True, epoch=3)
    for sample, raw in zip(samples, iter_split_samples(str(version), "val"), strict=False):
        assert sample["key"] == raw.key
        row = actor({"key": np.array([raw.key], object), "video": np.array([raw.video], object),
                     "label": np.array([raw.label]), "height": np.array([raw.meta["height"]]),
                     "width": np.array([raw.meta["width"]])})
        assert "frames" in row  # the default placement: the training device augments, browse shows its result
        clip = augment_row({"frames": row["frames"][0], "aug": row["aug"][0]}, config)["clip"]
        assert np.array_equal(np.load(sample["npz"])["clip"], clip)  # same frames, same random draws
