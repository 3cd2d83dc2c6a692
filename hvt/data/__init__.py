"""Train-time data: WebDataset video shards -> Ray Data -> uint8 clips for Ray Train.

Modules, one concern each: ``config`` (DataConfig), ``shards`` (shard URLs, tar samples), ``clip_sampling``
(which frames), ``decode`` (bytes -> clips), ``transforms`` / ``randaugment`` (augmentation), ``static_clips``
(motion-loss fakes), ``ray_dataset`` (Ray Data wiring). Import what you need from here.
"""

from hvt.data.clip_sampling import ClipSampler, eval_clip_offsets, frame_indices, train_clip_offsets
from hvt.data.config import DataConfig
from hvt.data.decode import (
    ClipLoader,
    DecodeClips,
    VideoDecodeError,
    load_clip_from_bytes,
    load_clip_from_path,
)
from hvt.data.ray_dataset import (
    ClipBatchCollate,
    build_clip_dataset,
    collate_clips,
    read_shards,
    split_decode_failures,
)
from hvt.data.shards import read_manifest_classes, resolve_shard_urls
from hvt.data.static_clips import MOTION_REAL, MOTION_STATIC, make_static_clip
from hvt.data.transforms import normalize_clips

__all__ = [
    "MOTION_REAL",
    "MOTION_STATIC",
    "ClipBatchCollate",
    "ClipLoader",
    "ClipSampler",
    "DataConfig",
    "DecodeClips",
    "VideoDecodeError",
    "build_clip_dataset",
    "collate_clips",
    "eval_clip_offsets",
    "frame_indices",
    "load_clip_from_bytes",
    "load_clip_from_path",
    "make_static_clip",
    "normalize_clips",
    "read_manifest_classes",
    "read_shards",
    "resolve_shard_urls",
    "split_decode_failures",
    "train_clip_offsets",
]
