"""Train-time data: WebDataset video shards -> Ray Data -> uint8 clips for Ray Train.

Modules, one concern each: ``config`` (DataConfig), ``shards`` (shard URLs, tar samples), ``clip_sampling``
(which frames), ``decode`` (bytes -> clips), ``transforms`` / ``randaugment`` (augmentation), ``static_clips``
(motion-loss fakes), ``device_augment`` (training augmentation on the training device), ``ray_dataset`` (Ray
Data wiring). Import what you need from here.
"""

from hvt.lazy import lazy_exports

# public name -> submodule; imported on first use (hvt/lazy.py)
_LAZY_EXPORTS = {
    "ClipBatchCollate": "ray_dataset",
    "ClipLoader": "decode",
    "ClipSampler": "clip_sampling",
    "DataConfig": "config",
    "DecodeClips": "decode",
    "DeviceAugment": "device_augment",
    "MOTION_REAL": "static_clips",
    "MOTION_STATIC": "static_clips",
    "VideoDecodeError": "video_reader",
    "build_clip_dataset": "ray_dataset",
    "collate_clips": "ray_dataset",
    "eval_clip_offsets": "clip_sampling",
    "frame_indices": "clip_sampling",
    "load_clip_from_bytes": "decode",
    "load_clip_from_path": "decode",
    "make_static_clip": "static_clips",
    "normalize_clips": "transforms",
    "read_manifest_classes": "shards",
    "read_shards": "ray_dataset",
    "resolve_shard_urls": "shards",
    "split_decode_failures": "ray_dataset",
    "train_clip_offsets": "clip_sampling",
    "train_columns": "ray_dataset",
}
__getattr__, __dir__, __all__ = lazy_exports(__name__, _LAZY_EXPORTS)
