"""Re-encode a video at shard time: H.264 yuv420p mp4, video only, frame-exact, upright.

Every shown frame of the source (sequential PyAV decode: edit list applied, presentation order) becomes one
frame of the output, numbered ``0, 1, 2, ...`` with time base ``1 / fps``, so the output has clean, constant
timestamps that any decoder seeks in correctly. The display rotation is applied to the pixels (the output carries
none). Any container FFmpeg reads comes in (mp4, mov, mkv, webm, avi, ...); audio and subtitles are dropped.
An optional ``[first_frame, end_frame)`` range (in shown frames) cuts an untrimmed video to its segment.
"""

from __future__ import annotations

import io
from fractions import Fraction

import av

from hvt.ingest import reasons
from hvt.ingest.config import TranscodeOptions
from hvt.ingest.probe import VideoInfo, _short, frame_rotation, iter_shown_frames, shown_rgb
from hvt.ingest.reasons import Quarantined

_FALLBACK_FPS = Fraction(25)  # only for a stream that declares no rate at all


def target_size(width: int, height: int, short_side: int | None) -> tuple[int, int]:
    """Scale so the short side is ``short_side`` (never up), both sides even (yuv420p)."""
    if short_side is not None and min(width, height) > short_side:
        scale = short_side / min(width, height)
        width, height = round(width * scale), round(height * scale)
    return max(2, width - width % 2), max(2, height - height % 2)


def source_rate(data: bytes) -> Fraction:
    """The source's frame rate (frames per second) as a fraction."""
    with av.open(io.BytesIO(data), mode="r") as container:
        stream = container.streams.video[0]
        return Fraction(stream.average_rate or stream.guessed_rate or _FALLBACK_FPS)


def transcode_video(
    data: bytes, options: TranscodeOptions, *, first_frame: int = 0, end_frame: int | None = None
) -> tuple[bytes, VideoInfo]:
    """Re-encode ``data`` (shown frames ``first_frame`` up to, not including, ``end_frame``) to H.264 mp4.

    Reproducible (one thread, bit-exact muxer). Returns the bytes and what they show. Raises :class:`Quarantined`
    (``transcode_failed``, ``corrupt`` or ``no_frames``) with a one-line reason.
    """
    try:
        return _transcode(data, options, first_frame, end_frame)
    except Quarantined:
        raise
    except (av.FFmpegError, ValueError, OSError, IndexError) as err:
        raise Quarantined(reasons.TRANSCODE_FAILED, f"re-encoding failed: {_short(err)}") from None


def _transcode(
    data: bytes, options: TranscodeOptions, first_frame: int, end_frame: int | None
) -> tuple[bytes, VideoInfo]:
    in_rate = source_rate(data)
    out_rate = in_rate
    if options.max_fps is not None and float(in_rate) > options.max_fps:
        out_rate = Fraction(options.max_fps).limit_denominator(1001)
    step = in_rate / out_rate  # >= 1: keep the frame whenever the output clock has caught up
    time_base = 1 / out_rate
    out = io.BytesIO()
    sink = stream = None
    written = 0
    size = rotation = None
    try:
        for index, frame in enumerate(iter_shown_frames(data)):
            if index < first_frame:
                continue
            if end_frame is not None and index >= end_frame:
                break
            if (index - first_frame) < written * step:
                continue
            if sink is None:
                rotation = frame_rotation(frame)
                shown_w, shown_h = (frame.height, frame.width) if rotation in (90, 270) else (frame.width, frame.height)
                size = target_size(shown_w, shown_h, options.short_side)
                sink = av.open(out, mode="w", format="mp4", options={"fflags": "+bitexact"})
                stream = _video_stream(sink, options, out_rate, size)
            if rotation:
                frame = av.VideoFrame.from_ndarray(shown_rgb(frame, rotation), format="rgb24")
            image = frame.reformat(width=size[0], height=size[1], format="yuv420p")
            image.pts = written
            image.time_base = time_base  # matches the pts: frame number at 1/fps
            for packet in stream.encode(image):
                sink.mux(packet)
            written += 1
        if sink is None:
            raise Quarantined(reasons.NO_FRAMES, f"no frame to re-encode (from shown frame {first_frame})")
        for packet in stream.encode(None):
            sink.mux(packet)
    finally:
        if sink is not None:
            sink.close()
    info = VideoInfo(
        container="mp4",
        codec="h264",
        width=size[0],
        height=size[1],
        fps=round(float(out_rate), 6),
        num_frames=written,
        duration=round(written / float(out_rate), 6),
    )
    return out.getvalue(), info


def _video_stream(sink: av.container.OutputContainer, options: TranscodeOptions, rate: Fraction, size: tuple[int, int]):
    stream = sink.add_stream("libx264", rate=rate)
    stream.width, stream.height, stream.pix_fmt = size[0], size[1], "yuv420p"
    stream.time_base = 1 / rate
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
    return stream


def frame_exact_bytes(data: bytes, *, num_checks: int = 6, tolerance: float = 1.0) -> bytes:
    """``data`` itself when the training decoder reads it frame-exactly, else the same video re-encoded (full size,
    all-intra-free defaults) so that it does; for one-off decoding outside the shards (``hvt predict``). Bytes that
    PyAV cannot read either are returned unchanged: the caller's decoder then reports the error."""
    from hvt.ingest.framecheck import check_training_decode
    from hvt.ingest.probe import codec_name, open_video

    try:
        with open_video(data) as container:
            if not container.streams.video:
                return data
            codec = codec_name(container.streams.video[0])
        if check_training_decode(data, codec=codec, num_checks=num_checks, tolerance=tolerance).ok:
            return data
        return transcode_video(data, TranscodeOptions(short_side=None))[0]
    except Quarantined:
        return data
