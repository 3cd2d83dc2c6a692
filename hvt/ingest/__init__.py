"""Shard time: annotation readers, probe/transcode, shard writer + manifest + quarantine, synthetic set."""

from hvt.ingest.config import ShardConfig, TranscodeOptions
from hvt.ingest.shard import ShardingError, ShardResult, shard_dataset
from hvt.ingest.synthetic import SyntheticDataset, make_synthetic_dataset
from hvt.ingest.versions import (
    DatasetVersion,
    latest_dataset_version,
    list_dataset_versions,
    load_manifest,
    shard_urls,
)

__all__ = [
    "DatasetVersion",
    "ShardConfig",
    "ShardResult",
    "ShardingError",
    "SyntheticDataset",
    "TranscodeOptions",
    "latest_dataset_version",
    "list_dataset_versions",
    "load_manifest",
    "make_synthetic_dataset",
    "shard_dataset",
    "shard_urls",
]
