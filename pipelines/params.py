"""Typed flow parameters (pydantic): the Prefect UI and CLI validate them before a run starts."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class SyntheticSource(BaseModel):
    """Generate the synthetic motion video set when the dataset does not exist yet."""

    model_config = ConfigDict(extra="forbid")

    classes: int = Field(default=4, ge=2)
    per_class: int = Field(default=40, ge=2)
    seed: int = 0
    frames: int = Field(default=32, ge=8)
    width: int = Field(default=112, ge=16)
    height: int = Field(default=112, ge=16)
    shard_size: int = Field(default=1000, ge=1, description="max samples per shard")
    workers: int = Field(default=1, ge=1, description="processes synthesizing and sharding the clips")


class VideoSource(BaseModel):
    """Annotations plus a folder (or s3:// prefix) of raw videos, sharded when the dataset does not exist yet."""

    model_config = ConfigDict(extra="forbid")

    annotations: str
    videos: str
    shard_size: int = Field(default=256, ge=1)
    workers: int = Field(default=2, ge=1)


class RetentionPolicy(BaseModel):
    """``hvt store gc`` after a nightly run (``hvt.maintenance.gc.collect_garbage``): what to keep besides what the
    registry's lineage, its aliases, running runs and each dataset's newest version always keep."""

    model_config = ConfigDict(extra="forbid")

    keep_runs: int = Field(default=3, ge=0, description="newest run folders kept")
    keep_dataset_versions: int = Field(default=2, ge=1, description="newest versions kept per dataset")
    dry_run: bool = Field(default=False, description="report what would go, remove nothing")
