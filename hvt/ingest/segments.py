"""Annotated segments of whole (untrimmed) videos: cut them out at shard time, or reject what cannot be the segment.

A Kinetics row names a YouTube id and a segment ``[time_start, time_end)`` in seconds of the *original* video.
Files named ``<ytid>_<start>_<end>.*`` are the trimmed segment already: as they are. A file found under the plain
name ``<ytid>.*`` may be either, and its duration tells which:

* about as long as the segment (within ``tolerance`` seconds): already trimmed, as it is;
* the segment lies inside it: a whole video, cut to the segment (shown frames ``round(start * fps)`` up to
  ``round(end * fps)``; the cut is a re-encode, see :mod:`hvt.ingest.transcode`);
* a segment that starts at the beginning of a shorter video: the whole video is the segment, as it is;
* otherwise (the segment starts after the video ends, or runs past its end): ``segment_out_of_range``.

Cutting at shard time (rather than sampling inside the segment at train time) keeps every stored sample exactly
the clip it is labelled as, so training, ``hvt browse`` and evaluation need to know nothing about segments.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass

from hvt.ingest import reasons
from hvt.ingest.probe import VideoInfo
from hvt.ingest.reasons import Quarantined


@dataclass(frozen=True)
class SegmentCut:
    """Shown frames ``[first_frame, end_frame)`` of the source hold the segment ``[start, end)`` seconds."""

    first_frame: int
    end_frame: int
    start: float
    end: float


def _is_plain_name(source: str, youtube_id: str) -> bool:
    stem = posixpath.basename(source).rsplit(".", 1)[0]
    return stem == youtube_id


def may_cut(entry: dict) -> bool:
    """True when the entry's segment can decide what is stored: its video was found under the plain name
    ``<ytid>.*``, so it may be a whole video cut to ``[time_start, time_end)``. Otherwise the segment is ignored."""
    ytid = entry.get("youtube_id")
    has_segment = entry.get("time_start") is not None and entry.get("time_end") is not None
    return bool(ytid) and has_segment and _is_plain_name(entry["source"], ytid)


def segment_cut(entry: dict, info: VideoInfo, tolerance: float) -> SegmentCut | None:
    """Where the entry's segment lies in its video: None (store the file as it is) or the frames to cut.

    ``entry``: a planned entry (``youtube_id``, ``time_start``, ``time_end`` in seconds, ``source``); ``info``:
    the probe of its video (shown frames, fps). Raises :class:`Quarantined` ``segment_out_of_range``.
    """
    if not may_cut(entry):
        return None
    ytid, start, end = entry["youtube_id"], entry["time_start"], entry["time_end"]
    start, end = float(start), float(end)
    length = end - start
    duration = info.duration if info.duration > 0 else (info.num_frames / info.fps if info.fps else 0.0)
    if length <= 0 or abs(duration - length) <= tolerance:
        return None
    if start <= tolerance and duration < length:
        return None  # the whole video is shorter than its segment, which starts at its beginning
    if start >= duration or end > duration + tolerance:
        raise Quarantined(
            reasons.SEGMENT_OUT_OF_RANGE,
            f"segment {start:g}-{end:g} s lies outside the video named {ytid!r} ({duration:.2f} s long): not the "
            "video of this row, or a wrong segment; fix the annotation or name the trimmed file "
            f"{ytid}_{int(start):06d}_{int(end):06d}",
        )
    first = max(0, round(start * info.fps))
    last = min(info.num_frames, round(end * info.fps))
    return SegmentCut(first_frame=first, end_frame=last, start=start, end=end)
