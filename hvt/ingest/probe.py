"""Probe a video before admitting it to a shard: a sequential reference decode with PyAV.

The probe really decodes (every frame by default): the header of a corrupt file often looks fine and its first
frames decode, while the stream breaks further on — exactly what would crash or silently skip at train time.
What it reports is what a player shows: frames after the container's edit list, in presentation order, and the
size after the display rotation. That is the reference the training decoder is checked against
(:mod:`hvt.ingest.framecheck`). Re-encoding lives in :mod:`hvt.ingest.transcode`.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import dataclass

import av
import numpy as np

from hvt.ingest import reasons
from hvt.ingest.reasons import Quarantined

HEAD_FRAMES = 3

# PyAV demuxer name -> extension to store, by the file's own extension.
_CONTAINERS = {
    "mov,mp4,m4a,3gp,3g2,mj2": {"mp4": "mp4", "m4v": "mp4", "mov": "mov", None: "mp4"},
    "matroska,webm": {"mkv": "mkv", "webm": "webm", None: "mkv"},
    "avi": {"avi": "avi", None: "avi"},
}


@dataclass(frozen=True)
class VideoInfo:
    """A video as a player shows it. ``width``/``height`` are the shown size (after ``rotation``), pixels;
    ``num_frames`` counts shown frames (after any edit list); ``fps`` frames per second; ``duration`` seconds;
    ``rotation`` the display rotation in degrees (a multiple of 90, counter-clockwise positive, FFmpeg's sign)."""

    container: str  # extension the bytes are stored under: mp4, mkv, webm, avi, mov
    codec: str
    width: int
    height: int
    fps: float
    num_frames: int
    duration: float
    rotation: int = 0


def _container_ext(format_name: str, ext: str) -> str:
    table = _CONTAINERS.get(format_name)
    if table is None:
        raise Quarantined(reasons.UNSUPPORTED_CONTAINER, f"container {format_name!r} (file '.{ext}') is not a video "
                          "container we shard")
    return table.get(ext, table[None])


def frame_rotation(frame: av.VideoFrame) -> int:
    """The frame's display rotation in degrees, rounded to a multiple of 90 (0 when there is none)."""
    rotation = getattr(frame, "rotation", 0) or 0
    return int(round(float(rotation) / 90.0)) * 90 % 360


def shown_rgb(frame: av.VideoFrame, rotation: int | None = None) -> np.ndarray:
    """uint8 ``[H, W, 3]`` RGB of the frame as shown: the display rotation applied to the pixels."""
    rgb = frame.to_ndarray(format="rgb24")
    turns = (frame_rotation(frame) if rotation is None else rotation) // 90
    return np.ascontiguousarray(np.rot90(rgb, turns)) if turns % 4 else rgb


def codec_name(stream: av.video.stream.VideoStream) -> str:
    """The codec's own name (``av1``, ``h264``, ``vp9``), not the name of the decoder FFmpeg picked (``libdav1d``)."""
    codec = stream.codec_context.codec
    return getattr(codec, "canonical_name", None) or codec.name


def open_video(data: bytes) -> av.container.InputContainer:
    """Open bytes with PyAV; :class:`Quarantined` ``corrupt`` when they are no container FFmpeg reads."""
    try:
        return av.open(io.BytesIO(data), mode="r")
    except (av.FFmpegError, ValueError, OSError) as err:
        raise Quarantined(reasons.CORRUPT, f"cannot open the container: {_short(err)}") from None


def _short(err: BaseException) -> str:
    """The error's text, one line, bounded, printable: decoder messages must never echo input bytes."""
    text = " ".join(str(err).split())
    text = "".join(ch if ch.isprintable() else "?" for ch in text)
    return text[:300]


def iter_shown_frames(data: bytes) -> Iterator[av.VideoFrame]:
    """Every shown frame of the first video stream, decoded sequentially (the reference order)."""
    with open_video(data) as container:
        if not container.streams.video:
            raise Quarantined(reasons.NO_VIDEO_STREAM, "the container holds no video stream")
        stream = container.streams.video[0]
        stream.codec_context.thread_count = 1
        try:
            yield from container.decode(stream)
        except (av.FFmpegError, ValueError) as err:
            raise Quarantined(reasons.CORRUPT, f"decoding failed: {_short(err)}") from None


def probe_video(data: bytes, *, ext: str, min_frames: int, full_decode: bool = True) -> VideoInfo:
    """Open and decode ``data``; raise :class:`Quarantined` with a reason when it cannot be admitted."""
    if not data:
        raise Quarantined(reasons.NO_FRAMES, "empty file (0 bytes)")
    with open_video(data) as container:
        stored_ext = _container_ext(container.format.name, ext)
        if not container.streams.video:
            raise Quarantined(reasons.NO_VIDEO_STREAM, "the container holds no video stream")
        stream = container.streams.video[0]
        stream.codec_context.thread_count = 1  # workers run in parallel already
        decoded = packets = 0
        rotation = 0
        try:
            for packet in container.demux(stream):
                if packet.size:
                    packets += 1
                if full_decode or decoded < HEAD_FRAMES:
                    for frame in packet.decode():
                        if decoded == 0:
                            rotation = frame_rotation(frame)
                        decoded += 1
        except (av.FFmpegError, ValueError) as err:
            raise Quarantined(reasons.CORRUPT, f"decoding failed after {decoded} frames: {_short(err)}") from None
        num_frames = decoded if full_decode else max(packets, stream.frames or 0)
        if decoded == 0:
            raise Quarantined(reasons.NO_FRAMES, f"no decodable frame ({packets} packets)")
        if num_frames < min_frames:
            raise Quarantined(reasons.TOO_SHORT, f"{num_frames} frames, fewer than min_frames={min_frames}")
        rate = stream.average_rate or stream.guessed_rate
        fps = float(rate) if rate else 0.0
        if full_decode and fps:
            duration = num_frames / fps  # shown frames: an edit list's hidden frames do not count
        elif stream.duration and stream.time_base:
            duration = float(stream.duration * stream.time_base)
        elif container.duration:
            duration = container.duration / av.time_base
        else:
            duration = num_frames / fps if fps else 0.0
        width, height = stream.codec_context.width, stream.codec_context.height
        if rotation in (90, 270):
            width, height = height, width
        return VideoInfo(
            container=stored_ext,
            codec=codec_name(stream),
            width=width,
            height=height,
            fps=round(fps, 6),
            num_frames=num_frames,
            duration=round(duration, 6),
            rotation=rotation,
        )
