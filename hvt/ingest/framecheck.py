"""Is the training decoder frame-exact on this file? Checked at shard time against a sequential reference decode.

The training decoder (decord, :func:`hvt.data.video_reader.read_frames`, exactly as training reads) seeks; seeking goes
wrong in files whose timestamps it misreads (H.264 in AVI with B-frames), counts frames a player never shows (an
mp4 edit list hiding the frames before a stream-copy cut), or cannot decode at all (a codec its FFmpeg lacks, such
as AV1). The reference is PyAV decoding every frame in order (:func:`hvt.ingest.probe.iter_shown_frames`), the
display rotation applied. The check compares the frame count and the pixels at a few indices spread over the
video, the last ones included, and at keyframes (where seeking lands); the two decoders share FFmpeg's decoders, so a file read right matches exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hvt.ingest import reasons
from hvt.ingest.probe import iter_shown_frames, shown_rgb


@dataclass(frozen=True)
class DecodeCheck:
    """The verdict: ``reason`` is None when the training decoder reads the file right, else
    ``decoder_mismatch`` or ``unsupported_codec``; ``detail`` says what differed (one line)."""

    reason: str | None
    detail: str
    indices: tuple[int, ...] = ()

    @property
    def ok(self) -> bool:
        return self.reason is None


def check_indices(num_frames: int, count: int) -> list[int]:
    """``count`` shown-frame indices spread evenly over ``[0, num_frames)``, always including the first and the
    last two (sorted, unique): where seeking errors and hidden frames show up."""
    if num_frames <= 0:
        return []
    spread = np.linspace(0, num_frames - 1, num=max(count, 2)).round().astype(int).tolist()
    return sorted({*spread, max(num_frames - 2, 0), num_frames - 1})


def reference_frames(
    data: bytes, indices: list[int], *, keyframes: int = 0
) -> tuple[int, dict[int, np.ndarray]]:
    """Sequential PyAV decode: the number of shown frames and uint8 ``[H, W, 3]`` RGB (upright) at ``indices``,
    plus at up to about ``2 * keyframes`` keyframes spread over the video (thinned as they come, so memory stays
    bounded). Keyframes are where a seeking decoder lands, and where it goes wrong on open-GOP streams (HEVC's
    CRA frames, shown after their leading pictures)."""
    wanted = set(indices)
    frames: dict[int, np.ndarray] = {}
    at_keyframes: dict[int, np.ndarray] = {}
    step, seen, count = 1, 0, 0
    for count, frame in enumerate(iter_shown_frames(data), start=1):
        index = count - 1
        if index in wanted:
            frames[index] = shown_rgb(frame)
        elif keyframes and index > 0 and frame.key_frame:
            if seen % step == 0:
                at_keyframes[index] = shown_rgb(frame)
                if len(at_keyframes) > 2 * keyframes:  # keep every other one, and store half as often from now
                    at_keyframes = {k: at_keyframes[k] for k in sorted(at_keyframes)[::2]}
                    step *= 2
            seen += 1
    return count, {**at_keyframes, **frames}


def check_training_decode(
    data: bytes, *, codec: str, num_checks: int, tolerance: float, num_frames: int | None = None
) -> DecodeCheck:
    """Compare the training decoder with the reference on ``data``.

    ``num_checks``: how many indices to compare (plus the last two); ``tolerance``: the largest mean absolute
    pixel difference (0-255 scale) still counted as the same frame; ``num_frames``: the reference count when the
    caller already has it (saves nothing but a sanity check otherwise). ``codec`` names the codec in the verdict.
    """
    from hvt.data.video_reader import VideoDecodeError, read_frames

    try:
        decoder_count, _ = read_frames(data, [])
    except VideoDecodeError as err:
        # The decoder's own words carry a clock time and garbage numbers: keep the detail reproducible.
        del err
        return DecodeCheck(reasons.UNSUPPORTED_CODEC, f"codec {codec!r}: the training decoder (decord) cannot "
                           "decode it")
    ref_count, _ = (num_frames, None) if num_frames is not None else reference_frames(data, [])
    spread = check_indices(min(ref_count, decoder_count), num_checks)
    ref_count, reference = reference_frames(data, spread, keyframes=num_checks)
    indices = sorted(reference)  # the spread ones and keyframes: one batch from a fresh reader, as training reads
    if decoder_count != ref_count:
        return DecodeCheck(reasons.DECODER_MISMATCH, f"the training decoder counts {decoder_count} frames, the "
                           f"reference shows {ref_count} (hidden frames, e.g. an edit list)", tuple(indices))
    try:
        _, decoded = read_frames(data, indices)
    except VideoDecodeError as err:
        return DecodeCheck(reasons.DECODER_MISMATCH, f"the training decoder fails on frames {indices} "
                           f"({err})", tuple(indices))
    wrong = []
    for index, got in zip(indices, decoded, strict=True):
        want = reference[index]
        if got.shape != want.shape:
            return DecodeCheck(reasons.DECODER_MISMATCH, f"frame {index}: the training decoder gives "
                               f"{got.shape[1]}x{got.shape[0]}, shown is {want.shape[1]}x{want.shape[0]} "
                               "(display rotation not applied?)", tuple(indices))
        diff = float(np.abs(got.astype(np.int16) - want.astype(np.int16)).mean())
        if diff > tolerance:
            wrong.append(f"{index} (mean |diff| {diff:.1f})")
    if wrong:
        return DecodeCheck(reasons.DECODER_MISMATCH, f"the training decoder returns other pictures at frames "
                           f"{', '.join(wrong)} of {len(indices)} checked (seeking in this file goes wrong)",
                           tuple(indices))
    return DecodeCheck(None, f"{len(indices)} frames and the count ({ref_count}) match the reference", tuple(indices))
