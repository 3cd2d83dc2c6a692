"""Which frames of a video make a clip: the ``T x interval x clips`` rule of the paper (mmaction2's SampleFrames).

A clip of ``T`` frames taken ``interval`` apart covers a *span* of ``T * interval`` frames (frame ``o``,
``o + interval``, ..., ``o + (T-1) * interval`` for an offset ``o``). For a video of ``n`` frames:

* **Training**: the ``n - span + 1`` valid offsets are cut into ``num_clips`` equal runs of ``w`` offsets
  (integer division) and each clip draws its offset uniformly from its own run. With fewer valid offsets than
  clips (``w == 0``) in a video longer than the span, the clips draw from all valid offsets (sorted); when the
  video is exactly as long as the span they all start at 0; a video shorter than the span starts every clip at 0.
* **Test**: the valid offsets are cut into ``num_clips`` equal (fractional) runs and each clip starts in the middle
  of its run, so one clip is centred in the video. A video shorter than the span starts every clip at frame 0.
* **Past the end**: a clip that starts at 0 in a video shorter than its span asks for frames ``>= n``. By default
  those indices wrap around (index modulo ``n``, mmaction2's ``loop``); ``repeat_last`` uses the clip's last
  in-range frame instead. Note what ``loop`` does to a 32-frame video at ``8x32``: every index is a multiple of 32,
  so all eight frames are frame 0. Pick a sampling whose span fits the data (e.g. ``8x4`` for short clips).

Everything here is pure numpy and takes the random generator explicitly, so it is testable alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

OutOfBound = Literal["loop", "repeat_last"]


def train_clip_offsets(num_frames: int, span: int, num_clips: int, rng: np.random.Generator) -> np.ndarray:
    """Random start frame of each training clip, int64 ``[num_clips]`` (see the module docstring for the rule)."""
    valid = num_frames - span + 1  # number of start frames whose clip ends inside the video
    run = valid // num_clips
    if run > 0:
        return np.arange(num_clips, dtype=np.int64) * run + rng.integers(0, run, size=num_clips)
    if num_frames > max(num_clips, span):
        return np.sort(rng.integers(0, valid, size=num_clips)).astype(np.int64)
    if run == 0:
        step = (valid + 0.0) / num_clips
        return np.around(np.arange(num_clips) * step).astype(np.int64)
    return np.zeros(num_clips, dtype=np.int64)


def eval_clip_offsets(num_frames: int, span: int, num_clips: int) -> np.ndarray:
    """Deterministic start frame of each test clip, int64 ``[num_clips]``: the middle of equal runs of valid offsets."""
    if num_frames < span:
        return np.zeros(num_clips, dtype=np.int64)
    run = (num_frames - span + 1) / num_clips
    return (np.arange(num_clips) * run + run / 2.0).astype(np.int64)


def frame_indices(
    offsets: np.ndarray,
    num_frames: int,
    clip_len: int,
    frame_interval: int,
    out_of_bound: OutOfBound = "loop",
) -> np.ndarray:
    """Frame indices ``[num_clips, clip_len]`` for clips starting at ``offsets``, all inside ``[0, num_frames)``."""
    if num_frames < 1:
        raise ValueError(f"cannot sample frames from a video with {num_frames} frames")
    inds = offsets[:, None] + np.arange(clip_len, dtype=np.int64)[None, :] * frame_interval  # [C, T]
    if out_of_bound == "loop":
        return np.mod(inds, num_frames)
    if out_of_bound == "repeat_last":
        inside = inds < num_frames
        last_inside = np.where(inside, inds, -1).max(axis=1, keepdims=True)  # offsets are in range, so >= 0
        return np.where(inside, inds, last_inside)
    raise ValueError(f"out_of_bound must be 'loop' or 'repeat_last', got {out_of_bound!r}")


@dataclass(frozen=True)
class ClipSampler:
    """``T x interval x clips`` sampler. ``sampler(num_frames, training, rng)`` gives indices ``[clips, T]``."""

    clip_len: int = 8
    frame_interval: int = 32
    num_clips: int = 1
    out_of_bound: OutOfBound = "loop"

    @property
    def span(self) -> int:
        return self.clip_len * self.frame_interval

    def offsets(self, num_frames: int, training: bool, rng: np.random.Generator | None = None) -> np.ndarray:
        if training:
            if rng is None:
                raise ValueError("training clips are random: pass a numpy Generator")
            return train_clip_offsets(num_frames, self.span, self.num_clips, rng)
        return eval_clip_offsets(num_frames, self.span, self.num_clips)

    def __call__(self, num_frames: int, training: bool, rng: np.random.Generator | None = None) -> np.ndarray:
        offsets = self.offsets(num_frames, training, rng)
        return frame_indices(offsets, num_frames, self.clip_len, self.frame_interval, self.out_of_bound)

    @classmethod
    def from_config(cls, config) -> ClipSampler:  # config: hvt.data.config.DataConfig
        return cls(config.num_frames, config.frame_interval, config.num_clips, config.out_of_bound)
