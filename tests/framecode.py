"""The frame code of ../shared/inputs (see its README), read back and written: no tests here.

Every frame shows a red band on top, a blue band at the bottom and, in rows 3/8-5/8 across the central half of
the width, 7 equal blocks writing the frame's index in binary (MSB left, white = 1). Reading finds the blocks and
samples the centre of each, so it survives decoding, cropping and resizing (a crop that keeps the whole code).
Videos made here (``write_coded_video``) use the same code, so tests can make the kinds of files they need.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from shared_data import shared_path

BITS = 7

# file -> (frames as shown, index carried by shown frame 0)
INPUT_FILES = {
    "frame_index_h264.mp4": (64, 0),
    "vp9.webm": (64, 0),
    "h264_bframes.avi": (96, 0),
    "editlist_cut.mp4": (76, 20),
    "av1.mp4": (48, 0),
    "rotated_minus90.mp4": (64, 0),
    "two_seconds.mp4": (50, 0),
}


def inputs() -> Path:
    """The shared tricky inputs; skip without them, except under CI where they must exist."""
    return shared_path("inputs")


def read_code(frame: np.ndarray) -> int:
    """The index written in one uint8 ``[H, W, 3]`` frame (as shown, possibly cropped and resized).

    Finds the code where it is (a crop moves it): the rows and columns of grey-free black-or-white pixels, split
    into 7 equal blocks, each read at its centre (threshold 128)."""
    f = frame.astype(np.int16)
    grey = f.mean(axis=2)
    colourless = (f.max(axis=2) - f.min(axis=2)) < 60
    ink = colourless & (np.abs(grey - 128) > 60)  # black (16) or white (235), not the grey background
    per_row = ink.sum(axis=1)
    rows = np.flatnonzero(per_row >= 0.8 * per_row.max())
    if per_row.max() == 0:
        return -1
    y0, y1 = rows.min(), rows.max() + 1
    cols = np.flatnonzero(ink[y0:y1].mean(axis=0) > 0.5)
    x0, x1 = cols.min(), cols.max() + 1
    band = grey[y0 + (y1 - y0) // 4 : y1 - (y1 - y0) // 4 or y1]
    width = (x1 - x0) / BITS
    value = 0
    for bit in range(BITS):
        a, b = int(x0 + (bit + 0.3) * width), int(x0 + (bit + 0.7) * width) + 1
        value = 2 * value + int(band[:, a:b].mean() > 128)
    return value


def is_upright(frame: np.ndarray) -> bool:
    """Red above blue: the centroid of red pixels lies above that of blue ones, both near the vertical middle."""
    f = frame.astype(np.int16)
    red = (f[..., 0] > 150) & (f[..., 2] < 100)
    blue = (f[..., 2] > 150) & (f[..., 0] < 100)
    if red.sum() < 4 or blue.sum() < 4:
        return False
    ry, rx = np.argwhere(red).mean(axis=0)
    by, bx = np.argwhere(blue).mean(axis=0)
    return ry < by - frame.shape[0] / 4 and abs(rx - bx) < frame.shape[1] / 4


def draw_frame(index: int, width: int, height: int) -> np.ndarray:
    """uint8 RGB ``[height, width, 3]`` carrying ``index`` in the frame code."""
    img = np.full((height, width, 3), 128, np.uint8)
    img[: height // 4] = (220, 30, 30)
    img[height - height // 4 :] = (30, 30, 220)
    y0, y1 = height * 3 // 8, height * 5 // 8
    for bit in range(BITS):
        on = (index >> (BITS - 1 - bit)) & 1
        x0 = width // 4 + bit * (width // 2) // BITS
        x1 = width // 4 + (bit + 1) * (width // 2) // BITS
        img[y0:y1, x0:x1] = 235 if on else 16
    square = max(2, height // 16)
    x = (index * 2) % max(1, width - square)
    img[height // 4 + 1 : height // 4 + 1 + square, x : x + square] = (30, 220, 30)
    return img


def write_coded_video(path: Path, num_frames: int, *, fps: int = 25, size: tuple[int, int] = (160, 120),
                      codec: str = "libx264", first_index: int = 0, keyint: int = 12, rotation: int = 0,
                      bframes: int | None = None) -> Path:
    """Encode frames carrying ``first_index ...`` (mod 128) with PyAV; the container follows the suffix.
    ``size`` is the size as shown; with a display ``rotation`` (degrees, counter-clockwise) the frames are stored
    turned the other way, as a phone does, so that a player shows them upright."""
    turns = rotation // 90
    stored = size if turns % 2 == 0 else (size[1], size[0])
    with av.open(str(path), mode="w") as out:
        stream = out.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = stored[0], stored[1], "yuv420p"
        stream.time_base = Fraction(1, fps)
        stream.codec_context.gop_size = keyint
        if bframes is not None:
            stream.codec_context.max_b_frames = bframes
        if rotation:
            stream.set_display_rotation(rotation)
        for i in range(num_frames):
            shown = draw_frame((first_index + i) % 2**BITS, *size)
            image = np.ascontiguousarray(np.rot90(shown, -turns))
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts = i
            frame.time_base = Fraction(1, fps)
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return path


def shown_codes(data: bytes) -> list[int]:
    """Codes of every frame as a player shows it: the sequential PyAV reference, rotation applied."""
    from hvt.ingest.probe import iter_shown_frames, shown_rgb

    return [read_code(shown_rgb(frame)) for frame in iter_shown_frames(data)]
