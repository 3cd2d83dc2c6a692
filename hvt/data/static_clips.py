"""Static fake clips for HaltingVT's motion loss.

For every real training clip the model also sees a *static* clip: one of the real clip's sampled frames repeated
``T`` times. It is cut from the already augmented real clip, so it has exactly the same crop, RandAugment and flip:
the only thing that tells the two apart is motion. The motion head learns real (1) vs static (0); the static clip
keeps the class label.
"""

from __future__ import annotations

import numpy as np

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
