"""Each RandAugment operation against an outside reference: PIL's ImageOps / ImageEnhance (the library the
RandAugment paper's and timm's implementations are written with), on one textured frame.

Pixel operations must match PIL to rounding (PIL rounds to uint8 at every step; we stay in float until the end);
geometric ones are compared away from the borders, where both resample the same source pixels.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image, ImageEnhance, ImageOps

from hvt.data.randaugment import AugOp, apply_op


def _frame(h: int = 64, w: int = 80, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([xx * 3 % 256, yy * 4 % 256, (xx + yy) * 2 % 256], -1)
    return (base * 0.8 + 20 + rng.integers(0, 30, (h, w, 3))).clip(0, 255).astype(np.uint8)


def _ours(frame: np.ndarray, name: str, level: float) -> np.ndarray:
    clip = torch.from_numpy(frame).permute(2, 0, 1)[None].float()
    return apply_op(clip, AugOp(name, level))[0].permute(1, 2, 0).round().clamp(0, 255).to(torch.uint8).numpy()


LEVEL = 0.7  # magnitude 7 of 10, positive direction

PIXEL_OPS = {
    "solarize": lambda im: ImageOps.solarize(im, threshold=256 - 256 * LEVEL),
    "posterize": lambda im: ImageOps.posterize(im, max(1, 8 - int(4 * LEVEL))),
    "color": lambda im: ImageEnhance.Color(im).enhance(1 + 0.9 * LEVEL),
    "brightness": lambda im: ImageEnhance.Brightness(im).enhance(1 + 0.9 * LEVEL),
    "contrast": lambda im: ImageEnhance.Contrast(im).enhance(1 + 0.9 * LEVEL),
    "autocontrast": ImageOps.autocontrast,
}


@pytest.mark.parametrize("name", sorted(PIXEL_OPS))
def test_pixel_operations_match_pil(name):
    frame = _frame()
    reference = np.asarray(PIXEL_OPS[name](Image.fromarray(frame))).astype(int)
    diff = np.abs(_ours(frame, name, LEVEL).astype(int) - reference)
    # PIL computes the contrast mean on a rounded grey image and rounds every blend: at most 2 grey levels apart
    assert diff.max() <= 2, (name, diff.max())
    assert diff.mean() < 0.6, (name, diff.mean())


@pytest.mark.parametrize(
    ("name", "pil"),
    [
        # a positive level turns the picture counter-clockwise, as PIL's positive angle does
        ("rotate", lambda im: im.rotate(30 * LEVEL, resample=Image.BILINEAR, fillcolor=(128, 128, 128))),
        # shear about the frame centre: x_in = x + k (y - H/2), in pixels
        ("shear_x", lambda im: im.transform(im.size, Image.AFFINE, (1, 0.3 * LEVEL, -0.3 * LEVEL * im.size[1] / 2, 0, 1, 0),
                                            resample=Image.BILINEAR, fillcolor=(128, 128, 128))),
        ("translate_x", lambda im: im.transform(im.size, Image.AFFINE, (1, 0, 0.45 * LEVEL * im.size[0], 0, 1, 0),
                                                resample=Image.BILINEAR, fillcolor=(128, 128, 128))),
    ],
)
def test_geometric_operations_match_pil_inside_the_frame(name, pil):
    frame = _frame()  # 80 x 64: not square, so a rotation done in normalised coordinates would show
    reference = np.asarray(pil(Image.fromarray(frame))).astype(int)
    ours = _ours(frame, name, LEVEL).astype(int)
    inner = (slice(8, -8), slice(8, -8))
    diff = np.abs(ours[inner] - reference[inner])
    assert np.median(diff) <= 2 and diff.mean() < 6, (name, float(np.median(diff)), diff.mean())
