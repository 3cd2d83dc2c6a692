"""Static fake clips for HaltingVT's motion loss.

For every real training clip the model also sees a *static* clip, built as the released code builds it
(``RawFrameFakeVidDataset`` with ``from_same_vid=True``): one frame of the same video, drawn uniformly among the
frames sampled for the clip, repeated ``T`` times and then augmented **as a clip of its own** (its own random
rescale and crop, RandAugment and flip draws, identical on its T frames). The motion head learns real (1) vs
static (0); the static clip keeps the class label.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from hvt.data.config import DataConfig
    from hvt.data.randaugment import RandAugment

MOTION_REAL = 1
MOTION_STATIC = 0


def pick_static_frame(num_frames: int, rng: np.random.Generator | None) -> int:
    """Index of the frame to freeze: uniform over the clip when training, the middle frame without an rng."""
    if rng is None:
        return num_frames // 2
    return int(rng.integers(num_frames))


def make_static_clip(clip: np.ndarray, frame_index: int) -> np.ndarray:
    """uint8 ``[T,H,W,3]`` -> uint8 ``[T,H,W,3]`` whose every frame is ``clip[frame_index]`` (a real copy)."""
    if clip.ndim != 4:
        raise ValueError(f"expected one clip [T,H,W,3], got shape {clip.shape}")
    return np.repeat(clip[frame_index : frame_index + 1], clip.shape[0], axis=0)


def make_static_views(views: np.ndarray, rng: np.random.Generator | None) -> np.ndarray:
    """Static clip per view: ``[T,H,W,3]`` or ``[V,T,H,W,3]`` in, same shape out (each view its own frozen frame)."""
    if views.ndim == 4:
        return make_static_clip(views, pick_static_frame(views.shape[0], rng))
    return np.stack([make_static_clip(v, pick_static_frame(v.shape[0], rng)) for v in views])


def make_static_training_clip(
    frames: np.ndarray, config: DataConfig, rng: np.random.Generator, randaugment: RandAugment | None = None
) -> np.ndarray:
    """The released static fake: decoded (not yet augmented) frames uint8 ``[T,H,W,3]`` of one sampled clip ->
    uint8 ``[T,crop,crop,3]``: one frame drawn with ``rng``, augmented with its own ``train_transform`` draws and
    repeated T times (augmenting the one frame equals augmenting T identical frames: RandAugment's statistics are
    over the whole clip)."""
    from hvt.data.transforms import train_transform

    if frames.ndim != 4:
        raise ValueError(f"expected one clip's frames [T,H,W,3], got shape {frames.shape}")
    index = pick_static_frame(frames.shape[0], rng)
    frame = train_transform(frames[index : index + 1], config, rng, randaugment)
    return np.repeat(frame, frames.shape[0], axis=0)
