"""The fixed vocabulary of reasons an annotation entry is quarantined instead of sharded."""

from __future__ import annotations

MISSING = "missing"  # no video found for the entry under the videos root
UNREADABLE = "unreadable"  # the file exists but its bytes could not be read (permissions, I/O)
CORRUPT = "corrupt"  # the container or the stream fails to open or decode
NO_VIDEO_STREAM = "no_video_stream"  # a readable container without a video stream (e.g. audio only)
NO_FRAMES = "no_frames"  # a video stream with zero decodable frames
TOO_SHORT = "too_short"  # fewer frames than ``min_frames``
UNSUPPORTED_CONTAINER = "unsupported_container"  # e.g. GIF, images, unknown extensions
UNKNOWN_LABEL = "unknown_label"  # label not in the class list, or no label for the id
DUPLICATE = "duplicate"  # same sample key or same source video as an earlier entry
BAD_ANNOTATION = "bad_annotation"  # a line that cannot be parsed
TRANSCODE_FAILED = "transcode_failed"  # decodable but re-encoding failed
DECODER_MISMATCH = "decoder_mismatch"  # the training decoder reads other frames than the reference (transcoding off)
UNSUPPORTED_CODEC = "unsupported_codec"  # the training decoder cannot decode the codec (transcoding off)
SEGMENT_OUT_OF_RANGE = "segment_out_of_range"  # the annotated segment lies outside the (untrimmed) video
UNTRIMMED = "untrimmed"  # a whole video whose segment must be cut out, and transcoding is off

REASONS: tuple[str, ...] = (
    MISSING,
    UNREADABLE,
    CORRUPT,
    NO_VIDEO_STREAM,
    NO_FRAMES,
    TOO_SHORT,
    UNSUPPORTED_CONTAINER,
    UNKNOWN_LABEL,
    DUPLICATE,
    BAD_ANNOTATION,
    TRANSCODE_FAILED,
    DECODER_MISMATCH,
    UNSUPPORTED_CODEC,
    SEGMENT_OUT_OF_RANGE,
    UNTRIMMED,
)


class Quarantined(Exception):
    """Raised inside the probe / transcode path: the entry is rejected for ``reason`` (one of :data:`REASONS`)."""

    def __init__(self, reason: str, detail: str) -> None:
        if reason not in REASONS:
            raise ValueError(f"unknown quarantine reason {reason!r}")
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail
