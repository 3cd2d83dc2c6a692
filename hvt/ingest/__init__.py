"""Shard time: annotation readers, probe/transcode, shard writer + manifest + quarantine, synthetic set."""

from hvt.lazy import lazy_exports

# public name -> submodule; imported on first use (hvt/lazy.py)
_LAZY_EXPORTS = {
    "DatasetVersion": "versions",
    "ShardConfig": "config",
    "ShardResult": "shard",
    "ShardingError": "shard",
    "SyntheticDataset": "synthetic",
    "TranscodeOptions": "config",
    "latest_dataset_version": "versions",
    "list_dataset_versions": "versions",
    "load_manifest": "versions",
    "make_synthetic_dataset": "synthetic",
    "shard_dataset": "shard",
    "shard_urls": "versions",
}
__getattr__, __dir__, __all__ = lazy_exports(__name__, _LAZY_EXPORTS)
