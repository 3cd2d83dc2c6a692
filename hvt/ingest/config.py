"""Typed parameters of a sharding run: one object travels from the CLI / Prefect flow to the shard workers."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

AnnotationFormat = Literal["auto", "kinetics_csv", "arnet", "s3d_ids", "mmaction"]

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")


TranscodePolicy = Literal["always", "needed", "never"]


class TranscodeOptions(BaseModel):
    """How a video is re-encoded at shard time: H.264 yuv420p mp4, video only, frame-exact and upright
    (:mod:`hvt.ingest.transcode`). ``keyint=1`` makes every frame a keyframe (all-intra: fastest to seek)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    short_side: int | None = Field(256, ge=16, description="resize so the short side is this (None: keep size)")
    keyint: int = Field(
        1, ge=1,
        description="keyframe interval in frames (the main lever on decode speed). Default 1, all-intra: on the "
        "real Kinetics clips (bench/data.py, docs/BENCHMARKS.md) it decodes a training clip about twice as fast as "
        "a keyframe every 8 frames, at about 2x the original bytes",
    )
    crf: int = Field(23, ge=0, le=51, description="x264 constant rate factor (lower = better, bigger)")
    preset: str = Field("veryfast", description="x264 preset")
    max_fps: float | None = Field(None, gt=0, description="drop frames down to this rate (None: keep)")


class ShardConfig(BaseModel):
    """Everything that decides what a sharding run writes (and, apart from ``workers``, ``ray_address``, ``reuse`` and
    ``retry_quarantined``, which change only what it costs, its version id)."""

    model_config = ConfigDict(extra="forbid")

    annotations: str = Field(description="annotation file (local path or fsspec URL)")
    videos: str = Field(description="root folder of the raw videos (local path or fsspec URL), listed once")
    store: str | None = Field(None, description="store URL; default $HVT_STORE or ./hvt-store")
    name: str = Field(description="dataset name: {store}/datasets/<name>/<version>/")
    format: AnnotationFormat = "auto"
    class_list: str | None = Field(None, description="class names, one per line, index = line number")
    labels_csv: list[str] = Field(
        default_factory=list, description="Kinetics CSVs that give labels to an S3D YouTube-id list"
    )
    split: str | None = Field(None, description="keep only entries of this split (e.g. 'val')")
    default_split: str = Field("train", description="split of entries whose annotation names none")
    shard_size: int | None = Field(1000, ge=1, description="max samples per shard")
    shard_bytes: int | None = Field(None, ge=1, description="max source bytes per shard")
    workers: int = Field(1, ge=1, description="parallel shard writers (local processes, or Ray tasks)")
    ray_address: str | None = Field(None, description="'auto', 'local' or host:port: write shards as Ray tasks")
    seed: int = 0
    min_frames: int = Field(8, ge=1, description="quarantine videos with fewer frames as too_short")
    decode_check: Literal["full", "head"] = Field(
        "full", description="decode every frame (catches mid-file corruption) or only the first few"
    )
    transcode: TranscodeOptions | None = Field(
        None, description="re-encoding options; given without transcode_policy, every video is re-encoded"
    )
    transcode_policy: TranscodePolicy | None = Field(
        None,
        description="'always' re-encode every video; 'needed' only those the training decoder would misread or "
        "cannot decode and untrimmed ones to cut; 'never' quarantine those. Default: 'always' when transcode is "
        "given, else 'needed'",
    )
    frame_checks: int = Field(6, ge=1, description="frames compared with the reference decode per video (plus the last two)")
    frame_tolerance: float = Field(
        1.0, ge=0, description="largest mean |pixel difference| (0-255) between training and reference decode"
    )
    segment_tolerance: float = Field(
        1.0, ge=0, description="seconds by which a video named <ytid>.* may differ from its segment and count as trimmed"
    )
    version: str | None = Field(None, description="override the derived version id")
    reuse: bool = Field(
        True, description="reuse what earlier versions of this dataset stored for an unchanged video (same sha256 and "
        "settings) instead of probing, checking and re-encoding it again; the result is the same either way",
    )
    retry_quarantined: bool = Field(
        False, description="with reuse: process again the videos an earlier version quarantined (else their verdict "
        "is repeated without reading more than their bytes)",
    )
    retries: int = Field(3, ge=0, description="retries for transient storage errors")

    @field_validator("name")
    @classmethod
    def _safe_name(cls, value: str) -> str:
        if not _NAME.match(value) or ".." in value:
            raise ValueError(
                f"dataset name {value!r} must be 1-100 characters of letters, digits, '_', '-', '.', "
                "starting with a letter or digit"
            )
        return value

    @field_validator("version")
    @classmethod
    def _safe_version(cls, value: str | None) -> str | None:
        if value is not None and (not _NAME.match(value) or ".." in value):
            raise ValueError(f"version {value!r} must be letters, digits, '_', '-', '.'")
        return value

    @field_validator("split", "default_split")
    @classmethod
    def _safe_split(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"[A-Za-z0-9_]{1,32}", value):
            raise ValueError(f"split {value!r} must be 1-32 letters, digits or '_'")
        return value

    @model_validator(mode="after")
    def _some_shard_limit(self) -> ShardConfig:
        if self.shard_size is None and self.shard_bytes is None:
            raise ValueError("give shard_size, shard_bytes or both")
        return self

    @property
    def policy(self) -> TranscodePolicy:
        """The transcode policy in force (see ``transcode_policy``)."""
        if self.transcode_policy is not None:
            return self.transcode_policy
        return "always" if self.transcode is not None else "needed"

    @property
    def transcode_options(self) -> TranscodeOptions:
        """Options for the videos that are re-encoded (the defaults when none are given)."""
        return self.transcode or TranscodeOptions()

    def plan_parameters(self) -> dict:
        """The parameters that shape the output (and hence the version id); not where or how fast it runs."""
        return {
            "format": self.format,
            "split": self.split,
            "default_split": self.default_split,
            "shard_size": self.shard_size,
            "shard_bytes": self.shard_bytes,
            "seed": self.seed,
            "min_frames": self.min_frames,
            "decode_check": self.decode_check,
            "transcode": None if self.transcode is None else self.transcode.model_dump(),
            "transcode_policy": self.policy,
            "frame_checks": self.frame_checks,
            "frame_tolerance": self.frame_tolerance,
            "segment_tolerance": self.segment_tolerance,
        }
