"""Spatial transforms for whole clips: one random draw per clip, applied identically to every frame.

Frames travel as uint8 ``[N, H, W, 3]`` numpy arrays (what decord returns). Resizing uses torch's uint8 bilinear
kernel with antialiasing (much faster than float on CPU); there is no torchvision here.

Rescale-then-crop is done as crop-then-rescale: the crop box is chosen in the rescaled frame's coordinates, mapped
back to the source frame and only that box is resized to ``crop x crop``. The result differs from resizing the
whole frame first by at most one source pixel of box placement, and costs a fraction of the work on large videos.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from hvt.data.config import DataConfig
from hvt.data.randaugment import OPS, AugOp, RandAugment, apply_ops


@dataclass(frozen=True)
class CropBox:
    """A square crop in source-frame pixels: rows ``top:top+height``, columns ``left:left+width``."""

    top: int
    left: int
    height: int
    width: int


def _box_from_scaled(src_h: int, src_w: int, short_side: int, crop: int, y0: float, x0: float) -> CropBox:
    """Map a ``crop x crop`` box at ``(y0, x0)`` in the frame rescaled to ``short_side`` back to source pixels."""
    scale = short_side / min(src_h, src_w)
    size_h = min(src_h, max(1, round(crop / scale)))
    size_w = min(src_w, max(1, round(crop / scale)))
    top = min(max(0, round(y0 / scale)), src_h - size_h)
    left = min(max(0, round(x0 / scale)), src_w - size_w)
    return CropBox(top, left, size_h, size_w)


def _scaled_size(src_h: int, src_w: int, short_side: int) -> tuple[int, int]:
    scale = short_side / min(src_h, src_w)
    return max(short_side, round(src_h * scale)), max(short_side, round(src_w * scale))


def random_crop_box(src_h: int, src_w: int, config: DataConfig, rng: np.random.Generator) -> CropBox:
    """Train: short side drawn uniformly from ``config.train_short_side`` (inclusive), crop at a random place."""
    low, high = config.train_short_side
    short = int(rng.integers(low, high + 1))
    h, w = _scaled_size(src_h, src_w, short)
    y0 = int(rng.integers(0, h - config.crop_size + 1))
    x0 = int(rng.integers(0, w - config.crop_size + 1))
    return _box_from_scaled(src_h, src_w, short, config.crop_size, y0, x0)


def eval_crop_boxes(src_h: int, src_w: int, config: DataConfig) -> list[CropBox]:
    """Test: short side ``config.test_short_side``; the centre crop, or three crops along the long side."""
    short, crop = config.test_short_side, config.crop_size
    h, w = _scaled_size(src_h, src_w, short)
    centre = ((h - crop) / 2, (w - crop) / 2)
    if config.test_crops == 1:
        places = [centre]
    elif h >= w:  # portrait: top, centre, bottom
        places = [(0, centre[1]), centre, (h - crop, centre[1])]
    else:  # landscape: left, centre, right
        places = [(centre[0], 0), centre, (centre[0], w - crop)]
    return [_box_from_scaled(src_h, src_w, short, crop, y0, x0) for y0, x0 in places]


def crop_and_resize(frames: np.ndarray, box: CropBox, size: int) -> torch.Tensor:
    """uint8 ``[N,H,W,3]`` -> uint8 tensor ``[N,3,size,size]`` (channels-last memory) of ``box`` resized."""
    region = torch.from_numpy(np.ascontiguousarray(frames)).permute(
        0, 3, 1, 2
    )  # [N,3,H,W], channels-last strides
    region = region[:, :, box.top : box.top + box.height, box.left : box.left + box.width]
    if box.height == size and box.width == size:
        return region.contiguous(memory_format=torch.channels_last)
    region = region.contiguous(memory_format=torch.channels_last)
    return F.interpolate(region, size=(size, size), mode="bilinear", antialias=True, align_corners=False)


def _to_numpy(clip: torch.Tensor) -> np.ndarray:
    """uint8 ``[N,3,H,W]`` -> contiguous uint8 numpy ``[N,H,W,3]``."""
    return np.ascontiguousarray(clip.permute(0, 2, 3, 1).numpy())


@dataclass(frozen=True)
class ClipAugment:
    """One training view's random draws: the crop box (source-frame pixels of a ``src_h x src_w`` frame), the
    RandAugment operations and the flip. Drawn on the decode side; applied there (``apply_train_params``) or on
    the training device (:mod:`hvt.data.device_augment`), which is why the draws and their application are apart."""

    src_h: int
    src_w: int
    box: CropBox
    ops: tuple[AugOp, ...]
    flip: bool


def draw_train_params(
    src_h: int, src_w: int, config: DataConfig, rng: np.random.Generator, randaugment: RandAugment | None = None
) -> ClipAugment:
    """Draw one training view's parameters, in the one order both placements use (box, RandAugment, flip)."""
    box = random_crop_box(src_h, src_w, config, rng)
    ops: tuple[AugOp, ...] = ()
    if config.randaugment and config.randaugment_n > 0:
        augment = randaugment or RandAugment(config.randaugment_n, config.randaugment_m)
        ops = tuple(augment.sample(rng))
    flip = bool(config.flip and rng.random() < 0.5)
    return ClipAugment(src_h, src_w, box, ops, flip)


def apply_train_params(frames: np.ndarray, params: ClipAugment, config: DataConfig) -> np.ndarray:
    """Apply drawn parameters on the CPU: uint8 ``[T,H,W,3]`` -> uint8 ``[T,crop,crop,3]``."""
    clip = crop_and_resize(frames, params.box, config.crop_size)  # [T,3,c,c] uint8
    if params.ops:
        clip = apply_ops(clip, params.ops)
    if params.flip:
        clip = clip.flip(-1)
    return _to_numpy(clip)


PARAM_FIELDS = ("src_h", "src_w", "placed_h", "placed_w", "top", "left", "height", "width", "flip")
"""Leading fields of a packed parameter row (source size, the size it was placed at in the transfer canvas, the
crop box in source pixels, the flip); then ``(operation id in OPS, level)`` per RandAugment slot."""


def placement(src_h: int, src_w: int, transfer: tuple[int, int]) -> tuple[bool, tuple[int, int]]:
    """Where a ``src_h x src_w`` video goes in the landscape transfer canvas ``(Ht, Wt)``: whether it is
    transposed (portrait), and its placed (height, width) in canvas orientation, aspect kept: short side ``Ht``
    unless the long side would then exceed ``Wt``."""
    ht, wt = transfer
    transposed = src_h > src_w
    rows, cols = (src_w, src_h) if transposed else (src_h, src_w)
    scale = min(ht / rows, wt / cols)
    return transposed, (max(1, min(ht, round(rows * scale))), max(1, min(wt, round(cols * scale))))


def param_ops(config: DataConfig) -> int:
    """RandAugment slots in a packed parameter row of ``config``."""
    return config.randaugment_n if config.randaugment else 0


def num_param_ops(row_length: int) -> int:
    return (row_length - len(PARAM_FIELDS)) // 2


def pack_params(params: ClipAugment, n_ops: int, placed: tuple[int, int]) -> np.ndarray:
    """float32 ``[len(PARAM_FIELDS) + 2 n_ops]``: what the training device needs to augment one view (exact:
    pixel coordinates and levels are small, float32 holds them). ``placed``: the frames' (height, width) in the
    transfer canvas (:func:`placement`). Missing operation slots are identities."""
    box = params.box
    row = np.zeros(len(PARAM_FIELDS) + 2 * n_ops, np.float32)
    row[: len(PARAM_FIELDS)] = (params.src_h, params.src_w, *placed, box.top, box.left, box.height, box.width,
                                params.flip)
    for k, op in enumerate(params.ops[:n_ops]):
        row[len(PARAM_FIELDS) + 2 * k : len(PARAM_FIELDS) + 2 * k + 2] = (OPS.index(op.name), op.level)
    return row


def train_transform(
    frames: np.ndarray, config: DataConfig, rng: np.random.Generator, randaugment: RandAugment | None = None
) -> np.ndarray:
    """One training view of a clip: uint8 ``[T,H,W,3]`` -> uint8 ``[T,crop,crop,3]``.

    Random short-side rescale + random crop, RandAugment and the optional flip, each drawn once for the clip.
    """
    params = draw_train_params(frames.shape[1], frames.shape[2], config, rng, randaugment)
    return apply_train_params(frames, params, config)


def eval_transform(frames: np.ndarray, config: DataConfig) -> list[np.ndarray]:
    """Test views of a clip: uint8 ``[T,H,W,3]`` -> ``test_crops`` arrays uint8 ``[T,crop,crop,3]``."""
    boxes = eval_crop_boxes(frames.shape[1], frames.shape[2], config)
    return [_to_numpy(crop_and_resize(frames, box, config.crop_size)) for box in boxes]


def normalize_clips(batch: torch.Tensor) -> torch.Tensor:
    """uint8 clips ``[B,T,H,W,3]`` (or ``[B,V,T,H,W,3]``) -> float ``[B,3,T,H,W]`` (``[B,V,3,T,H,W]``) in [-1, 1].

    Call it on the training device, after the transfer: uint8 is 4x cheaper to move than float32.
    """
    if batch.dim() not in (5, 6) or batch.shape[-1] != 3:
        raise ValueError(f"expected uint8 clips [B,T,H,W,3] or [B,V,T,H,W,3], got shape {tuple(batch.shape)}")
    x = batch.float().div_(127.5).sub_(1.0)
    return x.movedim(-1, -4).contiguous()  # channels before time: [..., 3, T, H, W]
