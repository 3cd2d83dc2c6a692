"""Video bytes -> augmented uint8 clips, with decord reading straight from memory.

``ClipLoader`` is the one code path: the Ray decode tasks (``DecodeClips``) and ``hvt predict`` (via
``load_clip_from_bytes`` / ``load_clip_from_path``) both go through it. Only the frames a clip needs are decoded
(``get_batch`` on the sorted unique indices); the crop is resized, never the whole frame.

Training with ``augment_on="device"`` (``ClipLoader.load_frames``, ``DecodeClips``' default), the pixels are
copied once on the decode side: decord decodes (and rescales where needed) into its own buffer, which numpy
reads through DLPack (no copy), and one assignment per frame writes the clip's frames (repeats included,
portrait frames transposed) into the batch's preallocated output array. The decode-side placement copies them several
more times (``asnumpy``, the frame gather, crop and resize, RandAugment, the layout change, ``np.stack``) and
ships a second, static clip; with the device placement the static clip is one frame index.

A sample that cannot be decoded never stops a batch: ``DecodeClips`` returns a zero-filled clip with
``decode_ok = False`` for that row and logs the key and reason, so the training loop counts failures exactly
(see ``hvt.data.split_decode_failures``).
"""

from __future__ import annotations

import logging
import os
import zlib

import numpy as np

from hvt.data.clip_sampling import ClipSampler
from hvt.data.config import DataConfig
from hvt.data.randaugment import RandAugment
from hvt.data.static_clips import make_static_training_clip, pick_static_frame
from hvt.data.transforms import (
    ClipAugment,
    CropBox,
    draw_train_params,
    eval_transform,
    pack_params,
    param_ops,
    placement,
    train_transform,
)
from hvt.data.video_reader import VideoDecodeError, open_video

log = logging.getLogger(__name__)

def decode_frames(
    data: bytes, sampler: ClipSampler, training: bool, rng: np.random.Generator | None, num_threads: int = 1
) -> np.ndarray:
    """Decode the frames of ``sampler``'s clips: uint8 ``[clips, T, H, W, 3]``.

    Raises ``VideoDecodeError`` with the decoder's message when the bytes are empty, not a video or corrupt.
    """
    return decode_sampled_frames(data, sampler, training, rng, num_threads)[0]


def decode_sampled_frames(
    data: bytes, sampler: ClipSampler, training: bool, rng: np.random.Generator | None, num_threads: int = 1
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`decode_frames` plus the indices it sampled: int64 ``[clips, T]``, in shown frames (0 = first)."""
    with open_video(data, num_threads) as reader:
        num_frames = len(reader)
        if num_frames < 1:
            raise VideoDecodeError("the video has no frames")
        indices = sampler(num_frames, training, rng)  # [C, T]
        wanted, inverse = np.unique(indices, return_inverse=True)  # decode each needed frame once, in order
        frames = reader.get_batch(wanted.tolist()).asnumpy()  # [U, H, W, 3]
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.shape[0] != len(wanted):
        raise VideoDecodeError(f"decoder returned frames of shape {frames.shape} for {len(wanted)} indices")
    return frames[inverse.reshape(indices.shape)], indices  # [C, T, H, W, 3], [C, T]


def _as_array(batch: object) -> np.ndarray:
    """decord's NDArray as a numpy array without a copy (DLPack), or with one where DLPack is unavailable."""
    try:
        from torch.utils.dlpack import from_dlpack

        return from_dlpack(batch.to_dlpack()).numpy()  # type: ignore[attr-defined]
    except (AttributeError, RuntimeError, TypeError):
        return batch.asnumpy()  # type: ignore[attr-defined]


def _resize_frames(frames: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """uint8 ``[N,H,W,3]`` -> uint8 ``[N,size[0],size[1],3]`` (torch's antialiased bilinear on uint8)."""
    import torch
    import torch.nn.functional as F

    if frames.shape[1:3] == tuple(size):
        return frames
    x = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).contiguous(memory_format=torch.channels_last)
    out = F.interpolate(x, size=size, mode="bilinear", antialias=True, align_corners=False)
    return out.permute(0, 2, 3, 1).numpy()


def decode_transfer_frames(
    data: bytes,
    sampler: ClipSampler,
    rng: np.random.Generator,
    transfer: tuple[int, int],
    out: np.ndarray,
    size_hint: tuple[int, int] | None = None,
    num_threads: int = 1,
) -> tuple[np.ndarray, tuple[int, int], tuple[int, int]]:
    """Decode a training sample's sampled frames into the fixed ``transfer`` canvas (height, width), into ``out``
    (uint8 ``[C, T, Ht, Wt, 3]``, written in place: the only copy after the decoder's own buffer).

    The frames keep their aspect: placed at the top left, short side ``Ht`` unless the long side would not fit
    (:func:`hvt.data.transforms.placement`; portrait videos transposed to landscape). A video already at that size
    (the shard writer's default transcode) is not rescaled at all; others are rescaled inside the decoder (FFmpeg's
    scaler, fused with the colour conversion) when ``size_hint`` (the shown (height, width) from the shard
    metadata) says how, else decoded as stored and rescaled here. The canvas beyond the frame is zero, but for one
    replicated row and column that the device's bilinear sampling may touch at the frame's edge. Returns the
    sampled indices int64 ``[C, T]``, the source (height, width) and the placed (height, width) in the canvas.
    Raises ``VideoDecodeError``.
    """
    ht, wt = transfer
    known = size_hint is not None and size_hint[0] > 0 and size_hint[1] > 0
    size: dict[str, int] = {}
    if known:
        src = (int(size_hint[0]), int(size_hint[1]))  # type: ignore[index]
        transposed, placed = placement(*src, transfer)
        shown = (placed[1], placed[0]) if transposed else placed  # the placed size in the video's orientation
        if shown != src:
            size = {"width": shown[1], "height": shown[0]}
    with open_video(data, num_threads, **size) as reader:
        num_frames = len(reader)
        if num_frames < 1:
            raise VideoDecodeError("the video has no frames")
        indices = sampler(num_frames, True, rng)  # [C, T]
        wanted, inverse = np.unique(indices, return_inverse=True)
        frames = _as_array(reader.get_batch(wanted.tolist()))  # [U, h, w, 3]
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.shape[0] != len(wanted):
        raise VideoDecodeError(f"decoder returned frames of shape {frames.shape} for {len(wanted)} indices")
    if not known:
        src = (int(frames.shape[1]), int(frames.shape[2]))
        transposed, placed = placement(*src, transfer)
        frames = _resize_frames(frames, (placed[1], placed[0]) if transposed else placed)
    if transposed:
        frames = frames.transpose(0, 2, 1, 3)
    ph, pw = placed
    if frames.shape[1:3] != placed:
        raise VideoDecodeError(f"decoder returned {frames.shape[1:3]} frames, expected {placed}")
    canvas = out.reshape(-1, ht, wt, 3)
    for k, source in enumerate(inverse.reshape(-1)):
        canvas[k, :ph, :pw] = frames[source]
    if pw < wt:
        canvas[:, :ph, pw] = canvas[:, :ph, pw - 1]
        canvas[:, :ph, pw + 1 :] = 0
    if ph < ht:
        canvas[:, ph] = canvas[:, ph - 1]
        canvas[:, ph + 1 :] = 0
    return indices, src, placed


class ClipLoader:
    """Bytes -> clip (and its static twin) for one configuration. Cheap to build; holds no video state."""

    def __init__(self, config: DataConfig) -> None:
        self.config = config
        self.sampler = ClipSampler.from_config(config)
        self.randaugment = RandAugment(config.randaugment_n, config.randaugment_m)

    def load(
        self,
        data: bytes,
        training: bool,
        rng: np.random.Generator | None = None,
        size_hint: tuple[int, int] | None = None,
    ) -> dict[str, np.ndarray]:
        """``{"clip": uint8 clip_shape, "frame_indices": int64 clip_shape[:-3]}`` (the source frame of each clip
        frame, in shown frames) plus ``"static_clip"`` (same shape as ``clip``) when training with static clips.
        Training with ``augment_on="device"``: the clips the training device makes of this sample (the same
        draws, augmented here on the CPU; the decode tasks ship :meth:`load_frames` rows instead; ``size_hint``:
        the shown (height, width) from the shard metadata, as the decode tasks get it)."""
        cfg = self.config
        if training and rng is None:
            raise ValueError("training clips are random: pass a numpy Generator")
        if cfg.device_augments(training):  # what the training device will make of this sample, made here
            from hvt.data.device_augment import augment_row

            return augment_row(self.load_frames(data, rng, size_hint), cfg)  # type: ignore[arg-type]
        frames, indices = decode_sampled_frames(data, self.sampler, training, rng, cfg.decode_threads)  # [C,T,H,W,3]
        views: list[np.ndarray] = []
        statics: list[np.ndarray] = []
        view_indices: list[np.ndarray] = []
        for clip_frames, clip_indices in zip(frames, indices, strict=True):
            if training:
                views.append(train_transform(clip_frames, cfg, rng, self.randaugment))
                view_indices.append(clip_indices)
                if cfg.static_clips:  # one of its frames, augmented as a clip of its own (the released way)
                    statics.append(make_static_training_clip(clip_frames, cfg, rng, self.randaugment))
            else:
                crops = eval_transform(clip_frames, cfg)
                views.extend(crops)
                view_indices.extend([clip_indices] * len(crops))  # crops of one clip hold the same frames
        clip = views[0] if len(views) == 1 else np.stack(views)
        out = {"clip": clip, "frame_indices": view_indices[0] if len(views) == 1 else np.stack(view_indices)}
        if statics:
            out["static_clip"] = statics[0] if len(statics) == 1 else np.stack(statics)
        return out


    def frames_shape(self) -> tuple[int, ...]:
        """Shape of the ``frames`` column of one row (``augment_on="device"``): ``[T, Ht, Wt, 3]`` or
        ``[V, T, Ht, Wt, 3]``."""
        cfg = self.config
        one = (cfg.num_frames, *cfg.transfer_size, 3)
        return one if cfg.num_clips == 1 else (cfg.num_clips, *one)

    def load_frames(
        self,
        data: bytes,
        rng: np.random.Generator,
        size_hint: tuple[int, int] | None = None,
        out: np.ndarray | None = None,
    ) -> dict[str, np.ndarray]:
        """A training row for ``augment_on="device"``: ``frames`` (uint8 :meth:`frames_shape`, written into
        ``out`` when given), ``aug`` (float32 ``[P]`` / ``[V, P]``, :func:`hvt.data.transforms.pack_params`),
        ``frame_indices`` and, with static clips, ``static_frame`` (int64 index into the clip's T frames) and
        ``static_aug``. The generator is drawn from exactly as the decode-side path draws from it (sampling, then
        per clip: its view's parameters, then the static frame and its parameters)."""
        cfg = self.config
        shape = self.frames_shape()
        if out is None:
            out = np.empty(shape, np.uint8)
        clips = out.reshape(cfg.num_clips, *shape[-4:])
        indices, (src_h, src_w), placed = decode_transfer_frames(
            data, self.sampler, rng, cfg.transfer_size, clips, size_hint, cfg.decode_threads
        )
        n_ops = param_ops(cfg)
        augs, static_frames, static_augs = [], [], []
        for _ in range(cfg.num_clips):
            augs.append(pack_params(draw_train_params(src_h, src_w, cfg, rng, self.randaugment), n_ops, placed))
            if cfg.static_clips:
                static_frames.append(pick_static_frame(cfg.num_frames, rng))
                static_augs.append(
                    pack_params(draw_train_params(src_h, src_w, cfg, rng, self.randaugment), n_ops, placed)
                )
        one = cfg.num_clips == 1
        row = {"frames": out, "aug": augs[0] if one else np.stack(augs),
               "frame_indices": indices[0] if one else indices}
        if cfg.static_clips:
            row["static_frame"] = np.int64(static_frames[0]) if one else np.asarray(static_frames, np.int64)
            row["static_aug"] = static_augs[0] if one else np.stack(static_augs)
        return row


def load_clip_from_bytes(
    data: bytes, config: DataConfig, training: bool = False, rng: np.random.Generator | None = None
) -> np.ndarray:
    """One video's bytes -> uint8 clip ``config.clip_shape(training)`` (``[T,H,W,3]`` for one view)."""
    if training and rng is None:
        rng = np.random.default_rng(config.seed)
    return ClipLoader(config).load(data, training, rng)["clip"]


def load_clip_from_path(path: str, config: DataConfig) -> np.ndarray:
    """A video file (local path or fsspec URL) -> uint8 clip with the test transform, as ``hvt predict`` needs.

    A raw file has not been through the shard-time check, so it is checked here: one the decoder would misread
    (or cannot decode) is re-encoded in memory first (:func:`hvt.ingest.transcode.frame_exact_bytes`)."""
    from hvt.ingest.transcode import frame_exact_bytes
    from hvt.storage import read_bytes

    return load_clip_from_bytes(frame_exact_bytes(read_bytes(path)), config, training=False)


def sample_rng(seed: int, epoch: int, key: str) -> np.random.Generator:
    """The augmentation stream of sample ``key`` in training epoch ``epoch`` of a run seeded ``seed``."""
    return np.random.default_rng(np.random.SeedSequence(entropy=seed, spawn_key=(epoch, zlib.crc32(key.encode()))))


class DecodeClips:
    """``map_batches`` callable: rows of video bytes -> rows of clips. Built per batch in a Ray Data task (``hvt.data.ray_dataset``).

    Input columns: ``key`` (str), ``video`` (bytes), ``label`` (int), optionally ``read_error`` (str, empty when the
    shard member was read fine) and ``height``/``width`` (the shown size from the shard metadata, 0 = unknown).
    Output columns: ``clip``, ``label`` (int64), ``key`` (str), ``decode_ok`` (bool), and ``static_clip`` when
    training with static clips. Failed rows carry zero-filled clips. Training with ``augment_on="device"``:
    ``frames``, ``aug``, ``static_frame``, ``static_aug`` instead of ``clip`` / ``static_clip``
    (:meth:`ClipLoader.load_frames`; the trainer augments them with :mod:`hvt.data.device_augment`).
    """

    def __init__(
        self, config: DataConfig, training: bool, rng_nonce: int | None = None, epoch: int | None = None
    ) -> None:
        import torch

        torch.set_num_threads(max(1, int(config.decode_cpus)))  # the task's CPU share, not the whole machine
        self.loader = ClipLoader(config)
        self.training = training
        # One stream per decoder (Ray builds one per batch): fixed by (seed, nonce) when a nonce is given (tests),
        # else fresh, so two batches or two epochs never repeat the same augmentations.
        nonce = rng_nonce if rng_nonce is not None else int.from_bytes(os.urandom(8), "little")
        self.rng = np.random.default_rng(np.random.SeedSequence(entropy=config.seed, spawn_key=(nonce,)))
        # With the training epoch known, every clip draws from its own stream, a function of (seed, epoch, key)
        # alone: the same run augments the same sample the same way whichever task or batch decodes it.
        self.epoch = epoch
        self.decoded = 0
        self.failed = 0

    def _rng(self, key: str, epoch: int | np.integer | None = None) -> np.random.Generator:
        """``key``'s stream for ``epoch`` (the row's ``epoch`` column, when the rows carry one), else for
        ``self.epoch``; the decoder's own stream when neither is known."""
        epoch = self.epoch if epoch is None else int(epoch)
        if epoch is None:
            return self.rng
        return sample_rng(self.loader.config.seed, epoch, key)

    def _placeholder_params(self) -> np.ndarray:
        """A valid parameter row for a failed sample (its row is dropped before augmentation anyway)."""
        cfg = self.loader.config
        ht, wt = cfg.transfer_size
        box = CropBox(0, 0, cfg.crop_size, cfg.crop_size)
        return pack_params(ClipAugment(ht, wt, box, (), False), param_ops(cfg), (ht, wt))

    def _call_device(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """``augment_on="device"`` rows: each sample's frames decoded into one preallocated batch array."""
        cfg = self.loader.config
        keys = [str(k) for k in batch["key"]]
        read_errors = batch.get("read_error")
        heights, widths = batch.get("height"), batch.get("width")
        epochs = batch.get("epoch")
        views = cfg.num_clips
        frames = np.empty((len(keys), *self.loader.frames_shape()), np.uint8)  # every row is written below
        lead = (len(keys),) if views == 1 else (len(keys), views)
        placeholder = self._placeholder_params()
        aug = np.broadcast_to(placeholder, (*lead, placeholder.size)).copy()
        static_frame = np.zeros(lead, np.int64)
        static_aug = aug.copy()
        oks = []
        for i, key in enumerate(keys):
            try:
                if read_errors is not None and read_errors[i]:
                    raise VideoDecodeError(str(read_errors[i]))
                hint = (int(heights[i]), int(widths[i])) if heights is not None and widths is not None else None
                rng = self._rng(key, None if epochs is None else epochs[i])
                row = self.loader.load_frames(batch["video"][i], rng, hint, out=frames[i])
                aug[i] = row["aug"]
                if cfg.static_clips:
                    static_frame[i], static_aug[i] = row["static_frame"], row["static_aug"]
                oks.append(True)
            except Exception as err:  # noqa: BLE001 - one bad sample must never end the epoch; it is counted
                log.warning("skipping sample %r: %s", key, err)
                frames[i] = 0
                oks.append(False)
        self.decoded += sum(oks)
        self.failed += len(oks) - sum(oks)
        result = {
            "frames": frames,
            "aug": aug,
            "label": np.asarray(batch["label"], dtype=np.int64),
            "key": np.asarray(keys, dtype=object),
            "decode_ok": np.asarray(oks, dtype=bool),
        }
        if cfg.static_clips:
            result["static_frame"], result["static_aug"] = static_frame, static_aug
        return result

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        cfg, training = self.loader.config, self.training
        if cfg.device_augments(training):
            return self._call_device(batch)
        shape = cfg.clip_shape(training)
        with_static = training and cfg.static_clips
        keys = [str(k) for k in batch["key"]]
        read_errors = batch.get("read_error")
        epochs = batch.get("epoch")
        clips, statics, oks = [], [], []
        for i, key in enumerate(keys):
            try:
                if read_errors is not None and read_errors[i]:
                    raise VideoDecodeError(str(read_errors[i]))
                rng = self._rng(key, None if epochs is None else epochs[i]) if training else None
                out = self.loader.load(batch["video"][i], training, rng)
                ok = True
            except Exception as err:  # noqa: BLE001 - one bad sample must never end the epoch; it is counted
                log.warning("skipping sample %r: %s", key, err)
                out = {"clip": np.zeros(shape, np.uint8)}
                if with_static:
                    out["static_clip"] = out["clip"]
                ok = False
            clips.append(out["clip"])
            if with_static:
                statics.append(out["static_clip"])
            oks.append(ok)
        self.decoded += sum(oks)
        self.failed += len(oks) - sum(oks)
        result = {
            "clip": np.stack(clips) if clips else np.zeros((0, *shape), np.uint8),
            "label": np.asarray(batch["label"], dtype=np.int64),
            "key": np.asarray(keys, dtype=object),
            "decode_ok": np.asarray(oks, dtype=bool),
        }
        if with_static:
            result["static_clip"] = np.stack(statics) if statics else np.zeros((0, *shape), np.uint8)
        return result
