"""RandAugment for video clips: ``n`` operations drawn once per clip and applied identically to every frame.

The operation set and magnitude scale (0-10, ``m=9`` by default) follow the RandAugment paper / timm's
``rand-m9-n2``. Operations that depend on image statistics (auto-contrast, equalize, contrast) compute them over
the *whole clip*, so every frame gets exactly the same pixel mapping: a clip of identical frames stays a clip of
identical frames, and no flicker is introduced between frames.

Works on uint8 tensors ``[N, 3, H, W]`` and returns the same shape and dtype.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

FILL = 128.0  # grey for the pixels that geometric operations bring in from outside the frame

OPS = (
    "identity",
    "autocontrast",
    "equalize",
    "rotate",
    "solarize",
    "color",
    "posterize",
    "contrast",
    "brightness",
    "sharpness",
    "shear_x",
    "shear_y",
    "translate_x",
    "translate_y",
)
_SIGNED = {
    "rotate",
    "color",
    "contrast",
    "brightness",
    "sharpness",
    "shear_x",
    "shear_y",
    "translate_x",
    "translate_y",
}


@dataclass(frozen=True)
class AugOp:
    """One drawn operation: its name and signed strength in [-1, 1] (magnitude / 10, sign where it applies)."""

    name: str
    level: float


def _blend(image: torch.Tensor, other: torch.Tensor | float, factor: float) -> torch.Tensor:
    """``other + factor * (image - other)`` in float, as PIL's ImageEnhance does."""
    return (other + factor * (image - other)).clamp_(0.0, 255.0)


def _grey(x: torch.Tensor) -> torch.Tensor:
    """ITU-R 601 luma of float ``[N,3,H,W]`` -> ``[N,1,H,W]``."""
    return 0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3]


def _affine(x: torch.Tensor, theta: list[list[float]]) -> torch.Tensor:
    """Warp float ``[N,3,H,W]`` by a 2x3 matrix in normalised coordinates (output -> input), grey fill."""
    mat = torch.tensor(theta, dtype=x.dtype).unsqueeze(0).expand(x.shape[0], 2, 3)
    grid = F.affine_grid(mat, list(x.shape), align_corners=False)
    return F.grid_sample(x - FILL, grid, mode="bilinear", padding_mode="zeros", align_corners=False) + FILL


def _equalize(x: torch.Tensor) -> torch.Tensor:
    """Histogram equalisation per channel with one lookup table for the whole clip (float in, float out)."""
    out = torch.empty_like(x)
    for c in range(3):
        values = x[:, c].round().to(torch.int64)
        hist = torch.bincount(values.flatten(), minlength=256)
        cdf = hist.cumsum(0)
        first = cdf[hist.nonzero()[0, 0]] if hist.any() else cdf[0]
        total = cdf[-1]
        if total == first:  # a single grey level: nothing to spread
            out[:, c] = x[:, c]
            continue
        lut = ((cdf - first).clamp(min=0).double() * 255.0 / float(total - first)).round().to(x.dtype)
        out[:, c] = lut[values]
    return out


def _sharpness(x: torch.Tensor, factor: float) -> torch.Tensor:
    kernel = torch.tensor([[1.0, 1.0, 1.0], [1.0, 5.0, 1.0], [1.0, 1.0, 1.0]], dtype=x.dtype) / 13.0
    kernel = kernel.expand(3, 1, 3, 3)
    smooth = F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), kernel, groups=3)
    return _blend(x, smooth, factor)


def apply_op(x: torch.Tensor, op: AugOp) -> torch.Tensor:
    """Apply one operation to a whole float clip ``[N,3,H,W]`` (0-255)."""
    name, level = op.name, op.level
    aspect = x.shape[-2] / x.shape[-1]  # H / W: turns pixel-space rotations and shears into normalised coordinates
    if name == "identity":
        return x
    if name == "autocontrast":
        low = x.amin(dim=(0, 2, 3), keepdim=True)
        high = x.amax(dim=(0, 2, 3), keepdim=True)
        scale = torch.where(high > low, 255.0 / (high - low).clamp(min=1e-6), torch.ones_like(high))
        low = torch.where(high > low, low, torch.zeros_like(low))
        return ((x - low) * scale).clamp_(0.0, 255.0)
    if name == "equalize":
        return _equalize(x)
    if name == "rotate":
        angle = math.radians(30.0 * level)
        cos, sin = math.cos(angle), math.sin(angle)
        return _affine(x, [[cos, -sin * aspect, 0.0], [sin / aspect, cos, 0.0]])  # a true rotation on W != H
    if name == "solarize":
        threshold = 256.0 - 256.0 * abs(level)
        return torch.where(x >= threshold, 255.0 - x, x)
    if name == "posterize":
        bits = max(1, 8 - int(4 * abs(level)))
        mask = 256 - (1 << (8 - bits))
        return (x.round().to(torch.int64) & mask).to(x.dtype)
    if name == "color":
        return _blend(x, _grey(x), 1.0 + 0.9 * level)
    if name == "contrast":
        return _blend(x, _grey(x).mean(), 1.0 + 0.9 * level)
    if name == "brightness":
        return _blend(x, 0.0, 1.0 + 0.9 * level)
    if name == "sharpness":
        return _sharpness(x, 1.0 + 0.9 * level)
    if name == "shear_x":
        return _affine(x, [[1.0, 0.3 * level * aspect, 0.0], [0.0, 1.0, 0.0]])  # x += 0.3 level y, in pixels
    if name == "shear_y":
        return _affine(x, [[1.0, 0.0, 0.0], [0.3 * level / aspect, 1.0, 0.0]])
    if name == "translate_x":  # 0.45 of the width at full strength; normalised coordinates span 2
        return _affine(x, [[1.0, 0.0, 0.9 * level], [0.0, 1.0, 0.0]])
    if name == "translate_y":
        return _affine(x, [[1.0, 0.0, 0.0], [0.0, 1.0, 0.9 * level]])
    raise ValueError(f"unknown RandAugment operation {name!r}; known: {', '.join(OPS)}")


def apply_ops(clip: torch.Tensor, ops: list[AugOp] | tuple[AugOp, ...]) -> torch.Tensor:
    """Apply drawn operations in order to a uint8 clip ``[N,3,H,W]``; rounds once, at the end."""
    if not ops or all(op.name == "identity" for op in ops):
        return clip
    x = clip.float()
    for op in ops:
        x = apply_op(x, op)
    return x.round_().clamp_(0, 255).to(torch.uint8)


class RandAugment:
    """``RandAugment(n=2, m=9)(clip_uint8 [N,3,H,W], rng)`` -> augmented clip, same shape and dtype."""

    def __init__(self, n: int = 2, m: float = 9.0, ops: tuple[str, ...] = OPS) -> None:
        unknown = set(ops) - set(OPS)
        if unknown:
            raise ValueError(f"unknown RandAugment operations {sorted(unknown)}; known: {', '.join(OPS)}")
        self.n, self.m, self.ops = n, m, ops

    def sample(self, rng: np.random.Generator) -> list[AugOp]:
        """Draw the operations for one clip (the only random step)."""
        drawn = []
        for _ in range(self.n):
            name = self.ops[int(rng.integers(len(self.ops)))]
            sign = -1.0 if (name in _SIGNED and rng.random() < 0.5) else 1.0
            drawn.append(AugOp(name, sign * self.m / 10.0))
        return drawn

    def apply(self, clip: torch.Tensor, ops: list[AugOp]) -> torch.Tensor:
        return apply_ops(clip, ops)

    def __call__(self, clip: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
        return self.apply(clip, self.sample(rng))
