"""The synthetic motion dataset: real H.264 files, reproducible bytes, class visible only from motion."""

from __future__ import annotations

import argparse
import csv
import hashlib
import os
import re
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest

from hvt.commands import synth as synth_command
from hvt.ingest.synthetic import MOTION_CLASSES, make_synthetic_dataset

REPO = Path(__file__).resolve().parents[1]


def _tree_digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _decode(path: Path) -> np.ndarray:
    with av.open(str(path)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])


def test_same_seed_same_bytes_across_processes(tmp_path: Path) -> None:
    kwargs = dict(classes=3, per_class=2, frames=8, size=(64, 48), seed=7)
    make_synthetic_dataset(str(tmp_path / "a"), **kwargs)
    # A second interpreter, rendering in a pool of two processes: catches anything that depends on process state
    # (hash seeds, threads, clocks) or on how the clips are spread over workers.
    code = (
        "import sys; from hvt.ingest.synthetic import make_synthetic_dataset as m; "
        "m(sys.argv[1], classes=3, per_class=2, frames=8, size=(64, 48), seed=7, workers=2)"
    )
    subprocess.run([sys.executable, "-c", code, str(tmp_path / "b")], check=True, timeout=120, cwd=REPO)
    make_synthetic_dataset(str(tmp_path / "c"), **{**kwargs, "seed": 8})
    a, b, c = (_tree_digest(tmp_path / name) for name in "abc")
    assert len(a) == 3 * 2 + 2
    assert a == b
    videos_a = {k: v for k, v in a.items() if k.endswith(".mp4")}
    videos_c = {k: v for k, v in c.items() if k.endswith(".mp4")}
    assert set(videos_a.values()).isdisjoint(videos_c.values())
    with pytest.raises(ValueError, match="workers"):
        make_synthetic_dataset(str(tmp_path / "d"), **{**kwargs, "workers": 0})


def test_files_annotations_and_split(tmp_path: Path) -> None:
    ds = make_synthetic_dataset(str(tmp_path), classes=5, per_class=8, frames=12, size=(64, 64), fps=6)
    assert ds.class_names == list(MOTION_CLASSES[:5])
    assert ds.num_videos == 40
    assert (tmp_path / "classes.txt").read_text().splitlines() == ds.class_names
    with open(ds.annotations_csv, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == ["label", "youtube_id", "time_start", "time_end", "split"]
    assert len(rows) == 40 and len({r["youtube_id"] for r in rows}) == 40
    for name in ds.class_names:
        splits = [r["split"] for r in rows if r["label"] == name]
        assert splits.count("val") == 2 and splits.count("train") == 6  # stratified, 25 %
    for row in rows:
        assert re.fullmatch(r"[A-Za-z0-9_-]{11}", row["youtube_id"])
        assert int(row["time_end"]) - int(row["time_start"]) == 10
        video = Path(ds.videos_dir) / f"{row['youtube_id']}_{int(row['time_start']):06d}_{int(row['time_end']):06d}.mp4"
        assert video.is_file()
    video = next(Path(ds.videos_dir).glob("*.mp4"))
    with av.open(str(video)) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264"
        assert stream.codec_context.pix_fmt == "yuv420p"
        assert (stream.codec_context.width, stream.codec_context.height) == (64, 64)
        assert stream.average_rate == 6
        keyframes = [p.is_keyframe for p in container.demux(stream) if p.size]
    assert len(keyframes) == 12
    assert [i for i, k in enumerate(keyframes) if k] == [0, 8]  # gop 8


def test_class_is_in_motion_not_in_a_single_frame(tmp_path: Path) -> None:
    """Nearest-centroid on one frame's mean colour is near chance; on frame-difference flow it is far above."""
    ds = make_synthetic_dataset(str(tmp_path), classes=8, per_class=16, frames=16, size=(64, 64), seed=3)
    with open(ds.annotations_csv, newline="") as handle:
        rows = list(csv.DictReader(handle))
    static, motion, labels = [], [], []
    for row in rows:
        path = next(Path(ds.videos_dir).glob(f"{row['youtube_id']}_*.mp4"))
        clip = _decode(path).astype(np.float32)  # [T, H, W, 3]
        static.append(np.concatenate([clip[0].reshape(-1, 3).mean(0), clip[len(clip) // 2].reshape(-1, 3).mean(0)]))
        motion.append(_flow_features(clip.mean(-1)))
        labels.append(row["label"])
    y = np.array(labels)
    static_acc = _nearest_centroid_accuracy(np.array(static), y)
    motion_acc = _nearest_centroid_accuracy(np.array(motion), y)
    chance = 1 / 8
    assert static_acc < chance + 0.2, static_acc
    assert motion_acc > 0.6, motion_acc


def _flow_features(gray: np.ndarray) -> np.ndarray:
    """Mean normal flow, curl and divergence about the moving region, from frame differences only."""
    it = gray[1:] - gray[:-1]  # [T-1, H, W]
    gy, gx = np.gradient(gray[:-1], axis=(1, 2))
    moving = (np.abs(it) > 20).astype(np.float32)
    denom = gx**2 + gy**2 + 25.0
    nu, nv = -it * gx / denom * moving, -it * gy / denom * moving
    height, width = gray.shape[1:]
    yy, xx = np.mgrid[0:height, 0:width]
    feats = []
    for t in range(len(it)):
        weight = moving[t].sum() + 1e-6
        # Circular centroid, because the scene wraps around.
        cx = np.angle((moving[t] * np.exp(2j * np.pi * xx / width)).sum()) / (2 * np.pi) * width
        cy = np.angle((moving[t] * np.exp(2j * np.pi * yy / height)).sum()) / (2 * np.pi) * height
        dx = np.mod(xx - cx + width / 2, width) - width / 2
        dy = np.mod(yy - cy + height / 2, height) - height / 2
        feats.append(
            [
                nu[t].sum() / weight,
                nv[t].sum() / weight,
                (dx * nv[t] - dy * nu[t]).sum() / weight,
                (dx * nu[t] + dy * nv[t]).sum() / weight,
                np.abs(nu[t]).sum() / weight,
                np.abs(nv[t]).sum() / weight,
            ]
        )
    return np.mean(feats, axis=0)


def _nearest_centroid_accuracy(x: np.ndarray, y: np.ndarray) -> float:
    x = (x - x.mean(0)) / (x.std(0) + 1e-6)
    train = np.arange(len(y)) % 2 == 0
    classes = sorted(set(y))
    centroids = np.stack([x[train & (y == c)].mean(0) for c in classes])
    dist = ((x[~train][:, None] - centroids[None]) ** 2).sum(-1)
    predicted = np.array(classes)[dist.argmin(1)]
    return float((predicted == y[~train]).mean())


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hvt")
    synth_command.register(parser.add_subparsers(dest="command", required=True))
    return parser


def test_cli_writes_dataset(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = _parser().parse_args(
        ["synth", str(tmp_path / "out"), "--classes", "2", "--per-class", "3", "--frames", "8", "--size", "48x32"]
    )
    assert args.func(args) == 0
    out = capsys.readouterr()
    assert "wrote 6 clips of 2 classes" in out.out
    assert "6/6" in out.err
    clip = _decode(next((tmp_path / "out" / "videos").glob("*.mp4")))
    assert clip.shape == (8, 32, 48, 3)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--size", "10"], "expected WxH"),
        (["--size", "33x32"], "even sides"),
        (["--classes", "0"], "positive integer"),
        (["--per-class", "x"], "positive integer"),
    ],
)
def test_cli_rejects_bad_arguments(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    with pytest.raises(SystemExit) as exc:
        _parser().parse_args(["synth", str(tmp_path), *argv])
    assert exc.value.code == 2
    assert message in capsys.readouterr().err
    assert not os.listdir(tmp_path)


def test_cli_rejects_too_many_classes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = _parser().parse_args(["synth", str(tmp_path / "x"), "--classes", "99"])
    assert args.func(args) == 2
    assert "--classes must be between 1 and" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
