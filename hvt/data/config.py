"""One typed object that says how shards become training clips: sampling, augmentation, parallelism.

It travels unchanged from the CLI / Prefect parameters to the Ray Data workers, so every field is plain data
(pydantic validates it at each hop). Sizes are configurable down to CPU-demo scale (e.g. crop 64 from short
side 72-88).
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

_SAMPLING = re.compile(r"^\s*(\d+)\s*x\s*(\d+)\s*x\s*(\d+)\s*$")


class DataConfig(BaseModel):
    """How shards become clips.

    Sampling follows the paper's ``T x interval x clips`` notation (``8x32x1``); see ``clip_sampling`` for the rule
    used when a video is shorter than the clip span. Every clip comes out as uint8 ``[T, crop, crop, 3]``;
    normalisation happens on the training device (``hvt.data.normalize_clips``).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    # temporal sampling
    num_frames: int = Field(8, ge=1, description="frames per clip (T)")
    frame_interval: int = Field(32, ge=1, description="distance between sampled frames")
    num_clips: int = Field(1, ge=1, description="clips per video (several = multi-view test)")
    out_of_bound: Literal["loop", "repeat_last"] = Field(
        "loop",
        description="indices past the end of a short video wrap around (mmaction2 default) or repeat the last frame",
    )

    # spatial transforms
    train_short_side: tuple[int, int] = Field(
        (256, 320), description="random short side range (inclusive), train"
    )
    test_short_side: int = Field(256, ge=1, description="short side before the centre crop, test")
    crop_size: int = Field(224, ge=1)
    test_crops: Literal[1, 3] = Field(1, description="1 = centre crop; 3 = three crops along the long side")
    flip: bool = Field(
        False, description="random horizontal flip (train); off for direction-sensitive classes"
    )
    randaugment: bool = True
    randaugment_n: int = Field(2, ge=0, description="operations per clip")
    randaugment_m: float = Field(9.0, ge=0.0, le=10.0, description="magnitude on the 0-10 scale")

    # where the training augmentation runs
    augment_on: Literal["decode", "device"] = Field(
        "device",
        description="decode: decode workers augment and ship finished clips (and static clips); device: they "
        "ship the sampled frames in one fixed-size canvas plus the drawn parameters, the training device augments "
        "(hvt.data.device_augment). Evaluation always crops on the decode side.",
    )
    transfer_aspect: float = Field(
        16 / 9, ge=1.0, le=4.0,
        description="long/short side of the fixed-size canvas the frames travel in with augment_on=device (short "
        "side train_short_side[0]). Frames keep their aspect: short side at the canvas height unless the long side "
        "would not fit (then scaled to fit), portrait videos transposed, the rest of the canvas zero",
    )

    # motion-loss fake clips
    static_clips: bool = Field(
        True, description="emit `static_clip` (one sampled frame repeated T times) when training"
    )

    # reading
    shuffle_buffer: int = Field(
        32, ge=0, description="within-shard shuffle buffer (samples per read task), train"
    )
    rows_per_block: int = Field(8, ge=1, description="samples per block leaving a read task")
    read_cpus: float = Field(0.25, gt=0, description="CPUs reserved per shard-read task (mostly I/O)")

    # decoding. Resources: decode_workers x decode_cpus + read_cpus must fit in what the trainer workers leave
    # free, or read tasks never get scheduled (on 2 cores: trainer workers at 0.5 CPU, or more logical CPUs).
    decode_workers: int = Field(1, ge=1, description="decode tasks running at once")
    decode_cpus: float = Field(1.0, gt=0, description="CPUs reserved per decode task (fractional allowed)")
    decode_threads: int = Field(
        1, ge=0, description="decord threads per video (0 = decord's automatic choice)"
    )
    decode_batch_rows: int = Field(4, ge=1, description="rows per map_batches call of a decode task (clips per "
                                   "training step are OptimConfig.batch_size)")

    seed: int = 0
    """Seeds the shard order and within-shard shuffle (new order each epoch, replayable on read retries). Without
    a training epoch given, decoders mix it with a random nonce per batch, so augmentations never repeat."""

    @field_validator("train_short_side")
    @classmethod
    def _ordered_range(cls, value: tuple[int, int]) -> tuple[int, int]:
        low, high = value
        if low < 1 or high < low:
            raise ValueError(f"train_short_side must be (low, high) with 1 <= low <= high, got {value}")
        return value

    @model_validator(mode="after")
    def _crop_fits(self) -> DataConfig:
        if self.crop_size > self.train_short_side[0]:
            raise ValueError(
                f"crop_size {self.crop_size} is larger than the smallest train short side {self.train_short_side[0]}"
            )
        if self.crop_size > self.test_short_side:
            raise ValueError(
                f"crop_size {self.crop_size} is larger than test_short_side {self.test_short_side}"
            )
        return self

    @property
    def sampling(self) -> str:
        """The paper's notation for the temporal sampling, e.g. ``8x32x1``."""
        return f"{self.num_frames}x{self.frame_interval}x{self.num_clips}"

    def num_views(self, training: bool) -> int:
        """Clips produced per video: ``num_clips`` when training, ``num_clips x test_crops`` at test."""
        return self.num_clips if training else self.num_clips * self.test_crops

    def clip_shape(self, training: bool) -> tuple[int, ...]:
        """Shape of the ``clip`` column for one row: ``[T,H,W,3]``, or ``[V,T,H,W,3]`` when there are several views."""
        one = (self.num_frames, self.crop_size, self.crop_size, 3)
        views = self.num_views(training)
        return one if views == 1 else (views, *one)

    @property
    def transfer_size(self) -> tuple[int, int]:
        """(height, width) of the canvas decode workers ship frames in with ``augment_on="device"``: short side
        ``train_short_side[0]`` (so the device only ever enlarges the crop box of a video placed at that height,
        as the decode-side path's upscale-then-crop does), long side ``transfer_aspect`` times that."""
        short = self.train_short_side[0]
        return short, max(short, round(short * self.transfer_aspect))

    def device_augments(self, training: bool) -> bool:
        """True when this config's training clips are augmented on the training device (rows carry frames)."""
        return training and self.augment_on == "device"

    @classmethod
    def for_sampling(cls, sampling: str, **overrides: object) -> DataConfig:
        """Build from the paper's notation: ``DataConfig.for_sampling("16x4x1", crop_size=112, ...)``."""
        match = _SAMPLING.match(sampling)
        if not match:
            raise ValueError(
                f"sampling {sampling!r} is not of the form '<frames>x<interval>x<clips>', e.g. '8x32x1'"
            )
        frames, interval, clips = (int(g) for g in match.groups())
        return cls(num_frames=frames, frame_interval=interval, num_clips=clips, **overrides)
