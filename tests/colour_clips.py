"""A video set a tiny model learns in a few CPU epochs, for tests of decisions that need a model clearly better
than another (the champion moving): the class is the colour of a noisy square (red, green, blue) over a noisy
grey background, visible in every frame. Written with PyAV (H.264), with Kinetics-style ``label,file,split``
annotations; each clip is a function of (seed, class, index), so a set can grow night by night."""

from __future__ import annotations

import csv
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

COLOURS = {"red": (200, 40, 40), "green": (40, 180, 40), "blue": (40, 60, 210)}


def write_clip(path: Path, colour: tuple[int, int, int], seed: int, *, frames: int = 16, size: int = 64) -> None:
    rng = np.random.default_rng(seed)
    side = (3 * size) // 4
    with av.open(str(path), mode="w") as out:
        stream = out.add_stream("libx264", rate=8)
        stream.width, stream.height, stream.pix_fmt = size, size, "yuv420p"
        stream.time_base = Fraction(1, 8)
        top, left = rng.integers(0, size - side, size=2)
        for i in range(frames):
            image = rng.integers(90, 150, size=(size, size, 3)).astype(np.int16)
            square = np.asarray(colour, dtype=np.int16) + rng.integers(-25, 25, size=(side, side, 3))
            image[top:top + side, left:left + side] = square
            frame = av.VideoFrame.from_ndarray(np.clip(image, 0, 255).astype(np.uint8), format="rgb24")
            frame.pts = i
            frame.time_base = Fraction(1, 8)
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)


def write_colour_set(root: Path, *, per_class: int, seed: int = 0, val_every: int = 4, start: int = 0) -> Path:
    """Clips ``start .. per_class - 1`` of each class under ``root/videos`` (kept when already there) and
    ``root/annotations.csv`` listing every clip ``0 .. per_class - 1`` (each ``val_every``-th in ``val``)."""
    videos = root / "videos"
    videos.mkdir(parents=True, exist_ok=True)
    rows = []
    for c, (name, colour) in enumerate(COLOURS.items()):
        for i in range(per_class):
            file = f"{name}_{i:03d}.mp4"
            if i >= start and not (videos / file).exists():
                write_clip(videos / file, colour, seed * 100_000 + c * 1000 + i)
            rows.append({"label": name, "file": file, "split": "val" if i % val_every == 0 else "train"})
    with open(root / "annotations.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["label", "file", "split"])
        writer.writeheader()
        writer.writerows(rows)
    return root / "annotations.csv"
