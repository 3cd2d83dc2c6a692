"""Video bytes -> augmented uint8 clips, with decord reading straight from memory.

``ClipLoader`` is the one code path: the Ray decode actors (``DecodeClips``) and ``hvt predict`` (via
``load_clip_from_bytes`` / ``load_clip_from_path``) both go through it. Only the frames a clip needs are decoded
(``get_batch`` on the sorted unique indices); the crop is resized, never the whole frame.

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
from hvt.data.static_clips import make_static_training_clip
from hvt.data.transforms import eval_transform, train_transform
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


class ClipLoader:
    """Bytes -> clip (and its static twin) for one configuration. Cheap to build; holds no video state."""

    def __init__(self, config: DataConfig) -> None:
        self.config = config
        self.sampler = ClipSampler.from_config(config)
        self.randaugment = RandAugment(config.randaugment_n, config.randaugment_m)

    def load(
        self, data: bytes, training: bool, rng: np.random.Generator | None = None
    ) -> dict[str, np.ndarray]:
        """``{"clip": uint8 clip_shape, "frame_indices": int64 clip_shape[:-3]}`` (the source frame of each clip
        frame, in shown frames) plus ``"static_clip"`` (same shape as ``clip``) when training with static clips."""
        cfg = self.config
        if training and rng is None:
            raise ValueError("training clips are random: pass a numpy Generator")
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
    """``map_batches`` callable: rows of video bytes -> rows of clips. Used as a Ray Data actor class.

    Input columns: ``key`` (str), ``video`` (bytes), ``label`` (int), optionally ``read_error`` (str, empty when the
    shard member was read fine). Output columns: ``clip``, ``label`` (int64), ``key`` (str), ``decode_ok`` (bool),
    and ``static_clip`` when training with static clips. Failed rows carry zero-filled clips.
    """

    def __init__(
        self, config: DataConfig, training: bool, rng_nonce: int | None = None, epoch: int | None = None
    ) -> None:
        import torch

        torch.set_num_threads(max(1, int(config.decode_cpus)))  # the actor's CPU share, not the whole machine
        self.loader = ClipLoader(config)
        self.training = training
        # One stream per actor: fixed by (seed, nonce) when a nonce is given (tests), else fresh per actor so two
        # epochs or two actors never repeat the same augmentations.
        nonce = rng_nonce if rng_nonce is not None else int.from_bytes(os.urandom(8), "little")
        self.rng = np.random.default_rng(np.random.SeedSequence(entropy=config.seed, spawn_key=(nonce,)))
        # With the training epoch known, every clip draws from its own stream, a function of (seed, epoch, key)
        # alone: the same run augments the same sample the same way whichever actor or batch decodes it.
        self.epoch = epoch
        self.decoded = 0
        self.failed = 0

    def _rng(self, key: str) -> np.random.Generator:
        if self.epoch is None:
            return self.rng
        return sample_rng(self.loader.config.seed, self.epoch, key)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        cfg, training = self.loader.config, self.training
        shape = cfg.clip_shape(training)
        with_static = training and cfg.static_clips
        keys = [str(k) for k in batch["key"]]
        read_errors = batch.get("read_error")
        clips, statics, oks = [], [], []
        for i, key in enumerate(keys):
            try:
                if read_errors is not None and read_errors[i]:
                    raise VideoDecodeError(str(read_errors[i]))
                out = self.loader.load(batch["video"][i], training, self._rng(key) if training else None)
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
