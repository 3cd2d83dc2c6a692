"""Probe a video before admitting it to a shard, and optionally re-encode it for cheap training-time decoding.

The probe really decodes (every frame by default): the header of a corrupt file often looks fine and its first
frames decode, while the stream breaks further on — exactly what would crash or silently skip at train time.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from fractions import Fraction

import av

from hvt.ingest import reasons
from hvt.ingest.config import TranscodeOptions
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
    container: str  # extension the bytes are stored under: mp4, mkv, webm, avi, mov
    codec: str
    width: int
    height: int
    fps: float
    num_frames: int
    duration: float


def _container_ext(format_name: str, ext: str) -> str:
    table = _CONTAINERS.get(format_name)
    if table is None:
        raise Quarantined(reasons.UNSUPPORTED_CONTAINER, f"container {format_name!r} (file '.{ext}') is not a video "
                          "container we shard")
    return table.get(ext, table[None])


def probe_video(data: bytes, *, ext: str, min_frames: int, full_decode: bool = True) -> VideoInfo:
    """Open and decode ``data``; raise :class:`Quarantined` with a reason when it cannot be admitted."""
    if not data:
        raise Quarantined(reasons.NO_FRAMES, "empty file (0 bytes)")
    try:
        container = av.open(io.BytesIO(data), mode="r")
    except (av.FFmpegError, ValueError, OSError) as err:
        raise Quarantined(reasons.CORRUPT, f"cannot open the container: {err}") from None
    with container:
        stored_ext = _container_ext(container.format.name, ext)
        if not container.streams.video:
            raise Quarantined(reasons.NO_VIDEO_STREAM, "the container holds no video stream")
        stream = container.streams.video[0]
        stream.codec_context.thread_count = 1  # workers run in parallel already
        decoded = packets = 0
        try:
            for packet in container.demux(stream):
                if packet.size:
                    packets += 1
                if full_decode or decoded < HEAD_FRAMES:
                    decoded += len(packet.decode())
        except (av.FFmpegError, ValueError) as err:
            raise Quarantined(reasons.CORRUPT, f"decoding failed after {decoded} frames: {err}") from None
        num_frames = decoded if full_decode else max(packets, stream.frames or 0)
        if decoded == 0:
            raise Quarantined(reasons.NO_FRAMES, f"no decodable frame ({packets} packets)")
        if num_frames < min_frames:
            raise Quarantined(reasons.TOO_SHORT, f"{num_frames} frames, fewer than min_frames={min_frames}")
        rate = stream.average_rate or stream.guessed_rate
        fps = float(rate) if rate else 0.0
        if stream.duration and stream.time_base:
            duration = float(stream.duration * stream.time_base)
        elif container.duration:
            duration = container.duration / av.time_base
        else:
            duration = num_frames / fps if fps else 0.0
        return VideoInfo(
            container=stored_ext,
            codec=stream.codec_context.name,
            width=stream.codec_context.width,
            height=stream.codec_context.height,
            fps=round(fps, 6),
            num_frames=num_frames,
            duration=round(duration, 6),
        )


def _target_size(width: int, height: int, short_side: int | None) -> tuple[int, int]:
    """Scale so the short side is ``short_side`` (never up), both sides even (yuv420p)."""
    if short_side is not None and min(width, height) > short_side:
        scale = short_side / min(width, height)
        width, height = round(width * scale), round(height * scale)
    return max(2, width - width % 2), max(2, height - height % 2)


def transcode_video(data: bytes, options: TranscodeOptions) -> tuple[bytes, VideoInfo]:
    """Re-encode to H.264 yuv420p mp4 (video only), reproducibly: one thread, bit-exact container."""
    try:
        return _transcode(data, options)
    except Quarantined:
        raise
    except (av.FFmpegError, ValueError, OSError) as err:
        raise Quarantined(reasons.TRANSCODE_FAILED, f"re-encoding failed: {err}") from None


def _transcode(data: bytes, options: TranscodeOptions) -> tuple[bytes, VideoInfo]:
    out = io.BytesIO()
    with av.open(io.BytesIO(data), mode="r") as source:
        in_stream = source.streams.video[0]
        in_stream.codec_context.thread_count = 1
        in_rate = in_stream.average_rate or in_stream.guessed_rate or Fraction(25)
        out_rate = Fraction(in_rate)
        if options.max_fps is not None and float(in_rate) > options.max_fps:
            out_rate = Fraction(options.max_fps).limit_denominator(1001)
        width, height = _target_size(in_stream.codec_context.width, in_stream.codec_context.height, options.short_side)
        with av.open(out, mode="w", format="mp4", options={"fflags": "+bitexact"}) as sink:
            stream = sink.add_stream("libx264", rate=out_rate)
            stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
            stream.codec_context.thread_count = 1
            stream.options = {
                "crf": str(options.crf),
                "preset": options.preset,
                "g": str(options.keyint),
                "keyint_min": str(options.keyint),
                "sc_threshold": "0",
                "flags": "+bitexact",
                "threads": "1",
            }
            written = 0
            step = float(in_rate) / float(out_rate)  # >= 1: keep every step-th frame
            for i, frame in enumerate(source.decode(in_stream)):
                if int(i / step) < written:
                    continue
                image = frame.reformat(width=width, height=height, format="yuv420p")
                image.pts = written
                for packet in stream.encode(image):
                    sink.mux(packet)
                written += 1
            for packet in stream.encode(None):
                sink.mux(packet)
    if written == 0:
        raise Quarantined(reasons.NO_FRAMES, "no frame to re-encode")
    info = VideoInfo(
        container="mp4",
        codec="h264",
        width=width,
        height=height,
        fps=round(float(out_rate), 6),
        num_frames=written,
        duration=round(written / float(out_rate), 6),
    )
    return out.getvalue(), info
