"""Training augmentation on the training device, batched, with per-clip parameters drawn on the decode side.

With ``DataConfig.augment_on = "device"`` a decode worker ships, per training view, the sampled frames in one
fixed-size canvas (``DataConfig.transfer_size``; aspect kept, portrait videos transposed:
:func:`hvt.data.transforms.placement`) and a small float32 parameter row (:func:`hvt.data.transforms.pack_params`:
the source and placed sizes, the crop box in source pixels, the flip, the RandAugment operations), drawn with the
same generator calls, in the same order, as the decode-side path draws them
(:func:`hvt.data.transforms.draw_train_params`). The same sample in the same epoch is therefore augmented with
the same parameters whichever placement runs, and the distribution (short side, crop place, flip rate, one
RandAugment draw per clip) is the decode-side one by construction. The static fake clip travels as one frame index
into the clip's frames plus its own parameter row: the device takes that frame, augments it as a clip of its own
and repeats it ``T`` times (``DeviceAugment.static``).

What runs where, and why:

* **Rescale + crop** (and undoing the transposition of portrait videos) is one
  ``kornia.geometry.transform.crop_and_resize`` per frame batch: each clip's box is given as four corner points
  in the canvas, so the transposition is only a corner order. The corners put the centre of the first and last
  output pixel where the decode-side resize (``F.interpolate``, half-pixel centres) puts them. A video placed at
  short side ``train_short_side[0]`` only ever has its crop box enlarged, so bilinear sampling equals the
  decode-side antialiased resize; a video the decoder had to rescale to fit differs by that rescale. The flip
  comes last, as on the decode side (RandAugment's rotations, shears and translations do not commute with it).
* **RandAugment** uses our own batched operations: the same formulas as :mod:`hvt.data.randaugment` (held against
  PIL in ``tests/test_data_randaugment_reference.py``), with per-clip parameter tensors. kornia does not do what
  the recipe needs here: ``kornia.augmentation.auto.RandAugment`` has another operation set and magnitude scale
  and draws per image; ``kornia.enhance`` computes image statistics (auto-contrast, equalise, contrast's mean
  grey) per image, where the recipe computes them over the whole clip so that a clip of identical frames stays
  identical (per-frame statistics would flicker); its ``adjust_brightness`` is additive and ``adjust_contrast``
  scales without blending towards the mean grey, unlike PIL's ``ImageEnhance`` that the recipe follows.

Units: frames uint8 0-255 in, float in [-1, 1] out (``normalize_clips``' convention), layout ``[B, 3, T, c, c]``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from hvt.data.config import DataConfig
from hvt.data.randaugment import FILL, OPS
from hvt.data.transforms import PARAM_FIELDS, num_param_ops

_OP_ID = {name: i for i, name in enumerate(OPS)}
_F = {name: i for i, name in enumerate(PARAM_FIELDS)}


def box_corners(params: torch.Tensor, crop: int) -> torch.Tensor:
    """Corner points ``[N, 4, 2]`` (x, y in the transfer canvas; top-left, top-right, bottom-right, bottom-left
    of the output) of each clip's crop, for ``kornia.geometry.transform.crop_and_resize`` (inclusive pixel-centre
    coordinates). ``params``: float ``[N, P]`` rows of :func:`hvt.data.transforms.pack_params`. No flip here:
    it comes after RandAugment, whose geometric operations do not commute with it."""
    col = lambda name: params[:, _F[name]]  # noqa: E731
    src_h, src_w = col("src_h").clamp_min(1.0), col("src_w").clamp_min(1.0)
    placed_h, placed_w = col("placed_h").clamp_min(1.0), col("placed_w").clamp_min(1.0)
    top, left, height, width = col("top"), col("left"), col("height"), col("width")
    transposed = src_h > src_w
    first, last = 0.5, crop - 0.5  # output pixel centres of the first and last column/row, in crop units
    # source coordinates (pixel centres) of the output's first/last column and row, as F.interpolate samples them
    x0, x1 = left + first * width / crop - 0.5, left + last * width / crop - 0.5
    y0, y1 = top + first * height / crop - 0.5, top + last * height / crop - 0.5
    # source -> canvas: (s + 0.5) * scale - 0.5 per axis; portrait frames are stored transposed
    sx = torch.where(transposed, placed_h / src_w, placed_w / src_w)  # scale of the source x axis
    sy = torch.where(transposed, placed_w / src_h, placed_h / src_h)
    tx0, tx1 = (x0 + 0.5) * sx - 0.5, (x1 + 0.5) * sx - 0.5
    ty0, ty1 = (y0 + 0.5) * sy - 0.5, (y1 + 0.5) * sy - 0.5
    # output corners (u, v) = (0,0), (c-1,0), (c-1,c-1), (0,c-1) -> source (x(u), y(v)) -> frame (col, row)
    xs = torch.stack([tx0, tx1, tx1, tx0], 1)
    ys = torch.stack([ty0, ty0, ty1, ty1], 1)
    t = transposed[:, None]
    return torch.stack([torch.where(t, ys, xs), torch.where(t, xs, ys)], -1)


def crop_frames(frames: torch.Tensor, params: torch.Tensor, crop: int) -> torch.Tensor:
    """uint8 ``[N, T, Ht, Wt, 3]`` (device) + float ``[N, P]`` (device) -> float ``[N, T, 3, c, c]`` 0-255, rounded
    as the decode-side uint8 resize rounds."""
    from kornia.geometry.transform import crop_and_resize

    n, t, ht, wt, _ = frames.shape
    corners = box_corners(params, crop).repeat_interleave(t, 0)  # [N*T, 4, 2]
    images = frames.reshape(n * t, ht, wt, 3).permute(0, 3, 1, 2).float()
    out = crop_and_resize(images, corners, (crop, crop), mode="bilinear", padding_mode="border", align_corners=True)
    return out.round_().clamp_(0.0, 255.0).reshape(n, t, 3, crop, crop)


# --------------------------------------------------------------------------- RandAugment, per-clip parameters


def _per_clip(values: torch.Tensor) -> torch.Tensor:
    return values.reshape(-1, 1, 1, 1, 1)


def _blend(x: torch.Tensor, other: torch.Tensor | float, factor: torch.Tensor) -> torch.Tensor:
    return (other + _per_clip(factor) * (x - other)).clamp_(0.0, 255.0)


def _grey(x: torch.Tensor) -> torch.Tensor:
    return 0.299 * x[:, :, 0:1] + 0.587 * x[:, :, 1:2] + 0.114 * x[:, :, 2:3]


def _affine(x: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """Warp clips ``[G,T,3,H,W]`` by per-clip 2x3 matrices ``[G,2,3]`` (normalised coordinates, output -> input)."""
    g, t, c, h, w = x.shape
    mats = theta.to(x.dtype).repeat_interleave(t, 0)
    flat = x.reshape(g * t, c, h, w)
    grid = F.affine_grid(mats, [g * t, c, h, w], align_corners=False)
    out = F.grid_sample(flat - FILL, grid, mode="bilinear", padding_mode="zeros", align_corners=False) + FILL
    return out.reshape(g, t, c, h, w)


def _equalize(x: torch.Tensor) -> torch.Tensor:
    """Histogram equalisation with one lookup table per clip and channel (statistics over all its frames)."""
    g, t, c, h, w = x.shape
    values = x.round().to(torch.int64).clamp_(0, 255).permute(0, 2, 1, 3, 4).reshape(g * c, -1)  # [G*3, T*H*W]
    offsets = torch.arange(g * c, device=x.device)[:, None] * 256
    hist = torch.bincount((values + offsets).flatten(), minlength=g * c * 256).reshape(g * c, 256)
    cdf = hist.cumsum(1)
    first_level = (hist > 0).to(torch.int64).argmax(1, keepdim=True)
    first = cdf.gather(1, first_level)
    total = cdf[:, -1:]
    span = (total - first).clamp_min(1).double()
    lut = ((cdf - first).clamp_min(0).double() * 255.0 / span).round().to(x.dtype)
    mapped = lut.gather(1, values)
    flat = torch.where(total > first, mapped, values.to(x.dtype))  # a single grey level: nothing to spread
    return flat.reshape(g, c, t, h, w).permute(0, 2, 1, 3, 4)


def _sharpness(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    g, t, c, h, w = x.shape
    kernel = torch.tensor([[1.0, 1.0, 1.0], [1.0, 5.0, 1.0], [1.0, 1.0, 1.0]], dtype=x.dtype, device=x.device) / 13.0
    flat = x.reshape(g * t, c, h, w)
    smooth = F.conv2d(F.pad(flat, (1, 1, 1, 1), mode="replicate"), kernel.expand(3, 1, 3, 3), groups=3)
    return _blend(x, smooth.reshape(g, t, c, h, w), factor)


def _matrix(rows: list[list[torch.Tensor | float]], like: torch.Tensor) -> torch.Tensor:
    return torch.stack([torch.stack([torch.as_tensor(v, dtype=like.dtype, device=like.device).expand_as(like)
                                     for v in row], -1) for row in rows], -2)  # [G, 2, 3]


def apply_op_batched(x: torch.Tensor, name: str, level: torch.Tensor) -> torch.Tensor:
    """One RandAugment operation on clips ``[G,T,3,H,W]`` (float 0-255), strength ``level`` ``[G]`` in [-1, 1]:
    the formulas of :func:`hvt.data.randaugment.apply_op`, statistics per clip."""
    aspect = x.shape[-2] / x.shape[-1]
    if name == "identity":
        return x
    if name == "autocontrast":
        low = x.amin(dim=(1, 3, 4), keepdim=True)
        high = x.amax(dim=(1, 3, 4), keepdim=True)
        scale = torch.where(high > low, 255.0 / (high - low).clamp(min=1e-6), torch.ones_like(high))
        low = torch.where(high > low, low, torch.zeros_like(low))
        return ((x - low) * scale).clamp_(0.0, 255.0)
    if name == "equalize":
        return _equalize(x)
    if name == "solarize":
        threshold = _per_clip(256.0 - 256.0 * level.abs())
        return torch.where(x >= threshold, 255.0 - x, x)
    if name == "posterize":
        bits = (8 - torch.trunc(4 * level.abs())).clamp_min(1)
        mask = (256 - torch.pow(2.0, 8 - bits)).to(torch.int64)
        return (x.round().to(torch.int64) & _per_clip(mask)).to(x.dtype)
    if name == "color":
        return _blend(x, _grey(x), 1.0 + 0.9 * level)
    if name == "contrast":
        return _blend(x, _grey(x).mean(dim=(1, 2, 3, 4), keepdim=True), 1.0 + 0.9 * level)
    if name == "brightness":
        return _blend(x, 0.0, 1.0 + 0.9 * level)
    if name == "sharpness":
        return _sharpness(x, 1.0 + 0.9 * level)
    zero, one = 0.0, 1.0
    if name == "rotate":
        angle = level * (30.0 * math.pi / 180.0)
        cos, sin = torch.cos(angle), torch.sin(angle)
        theta = _matrix([[cos, -sin * aspect, zero], [sin / aspect, cos, zero]], level)
    elif name == "shear_x":
        theta = _matrix([[one, 0.3 * level * aspect, zero], [zero, one, zero]], level)
    elif name == "shear_y":
        theta = _matrix([[one, zero, zero], [0.3 * level / aspect, one, zero]], level)
    elif name == "translate_x":
        theta = _matrix([[one, zero, 0.9 * level], [zero, one, zero]], level)
    elif name == "translate_y":
        theta = _matrix([[one, zero, zero], [zero, one, 0.9 * level]], level)
    else:
        raise ValueError(f"unknown RandAugment operation {name!r}; known: {', '.join(OPS)}")
    return _affine(x, theta)


def randaugment_batched(x: torch.Tensor, params_host: np.ndarray, params: torch.Tensor) -> torch.Tensor:
    """Apply each clip's drawn operations to float clips ``[N,T,3,c,c]``; the operation ids are read from the host
    copy of the parameters (grouping clips by operation costs no device sync). Rounds once at the end."""
    n_ops = num_param_ops(params_host.shape[-1])
    if n_ops == 0:
        return x
    ids = params_host[:, len(PARAM_FIELDS):].reshape(-1, n_ops, 2)[:, :, 0].round().astype(np.int64)
    if (ids == _OP_ID["identity"]).all():
        return x
    for k in range(n_ops):
        level_col = len(PARAM_FIELDS) + 2 * k + 1
        for op_id in np.unique(ids[:, k]):
            name = OPS[int(op_id)]
            if name == "identity":
                continue
            rows = np.flatnonzero(ids[:, k] == op_id)
            if len(rows) == len(ids):
                x = apply_op_batched(x, name, params[:, level_col])
                continue
            index = torch.from_numpy(rows).to(x.device)
            x = x.index_copy(0, index, apply_op_batched(x.index_select(0, index), name, params[index, level_col]))
    return x.round_().clamp_(0.0, 255.0)


class DeviceAugment:
    """``DeviceAugment(config)(frames, params)``: the training views of a batch, on the frames' device.

    ``frames``: uint8 ``[B, T, Ht, Wt, 3]`` or ``[B, V, T, Ht, Wt, 3]`` (``config.transfer_size``), already on the
    training device. ``params``: the batch's ``aug`` column, float32 ``[B, P]`` / ``[B, V, P]`` on the host.
    Returns float ``[B, 3, T, c, c]`` (``[B, V, 3, T, c, c]``) in [-1, 1].
    """

    def __init__(self, config: DataConfig) -> None:
        self.config = config

    def _params(self, params: Any, device: torch.device) -> tuple[np.ndarray, torch.Tensor]:
        host = params.cpu().numpy() if isinstance(params, torch.Tensor) else np.asarray(params)
        host = host.reshape(-1, host.shape[-1]).astype(np.float32, copy=False)
        return host, torch.from_numpy(np.ascontiguousarray(host)).to(device, non_blocking=True)

    def views_0_255(self, frames: torch.Tensor, params: Any) -> torch.Tensor:
        """float ``[N, T, 3, c, c]`` 0-255 (integral values) for frames flattened to ``[N, T, Ht, Wt, 3]``."""
        host, dev = self._params(params, frames.device)
        flat = frames.reshape(-1, *frames.shape[-4:])
        if flat.shape[0] != host.shape[0]:
            raise ValueError(f"{flat.shape[0]} clips of frames but {host.shape[0]} parameter rows")
        x = randaugment_batched(crop_frames(flat, dev, self.config.crop_size), host, dev)
        flip = torch.from_numpy(host[:, _F["flip"]] > 0.5)
        if flip.any():  # host data: no device sync
            x = torch.where(flip.to(x.device).reshape(-1, 1, 1, 1, 1), x.flip(-1), x)
        return x

    def _finish(self, x: torch.Tensor, lead: tuple[int, ...]) -> torch.Tensor:
        x = x.div_(127.5).sub_(1.0).permute(0, 2, 1, 3, 4)  # [N, 3, T, c, c]
        return x.reshape(*lead, *x.shape[1:]).contiguous()

    def __call__(self, frames: torch.Tensor, params: Any) -> torch.Tensor:
        lead = tuple(frames.shape[:-4])
        return self._finish(self.views_0_255(frames, params), lead)

    def static(self, frames: torch.Tensor, frame_index: Any, params: Any) -> torch.Tensor:
        """The static fake clips: frame ``frame_index`` (``[B]`` / ``[B, V]``, index into each clip's T frames)
        of each clip, augmented with its own parameters as a one-frame clip, repeated T times. Same shape and
        range as ``__call__``'s output."""
        return self._finish(self.static_0_255(frames, frame_index, params), tuple(frames.shape[:-4]))

    def static_0_255(self, frames: torch.Tensor, frame_index: Any, params: Any) -> torch.Tensor:
        """:meth:`static` as float ``[N, T, 3, c, c]`` 0-255 (frames flattened to ``[N, T, Ht, Wt, 3]``)."""
        t = frames.shape[-4]
        flat = frames.reshape(-1, *frames.shape[-4:])
        index = torch.as_tensor(np.asarray(frame_index.cpu() if isinstance(frame_index, torch.Tensor)
                                           else frame_index, dtype=np.int64).reshape(-1))
        rows = torch.arange(flat.shape[0], device=flat.device)
        chosen = flat[rows, index.to(flat.device)].unsqueeze(1)  # [N, 1, Ht, Wt, 3]
        return self.views_0_255(chosen, params).expand(-1, t, -1, -1, -1).clone()  # [N, T, 3, c, c]

    def to_uint8(self, frames: torch.Tensor, params: Any) -> torch.Tensor:
        """uint8 ``[N, T, c, c, 3]``, the decode-side layout (tests, ``hvt browse``)."""
        return self.views_0_255(frames, params).to(torch.uint8).permute(0, 1, 3, 4, 2).contiguous()


def augment_row(row: dict[str, np.ndarray], config: DataConfig) -> dict[str, np.ndarray]:
    """A :meth:`hvt.data.decode.ClipLoader.load_frames` row augmented here (CPU) exactly as the training device
    would: adds uint8 ``clip`` (and ``static_clip``) in the decode-side layout. For ``hvt browse`` and tests."""
    augment = DeviceAugment(config)
    frames = torch.from_numpy(np.ascontiguousarray(row["frames"]))
    clips = frames.reshape(-1, *frames.shape[-4:])  # [V, T, Ht, Wt, 3]
    shape = config.clip_shape(True)
    out = dict(row)
    out["clip"] = augment.to_uint8(clips, row["aug"]).numpy().reshape(shape)
    if "static_frame" in row:
        static = augment.static_0_255(clips, row["static_frame"], row["static_aug"])
        out["static_clip"] = static.to(torch.uint8).permute(0, 1, 3, 4, 2).numpy().reshape(shape)
    return out
