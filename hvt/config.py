"""The one configuration object that travels from the CLI / Prefect parameters to the Ray job to the loop.

``TrainConfig`` is a pydantic model: Prefect validates it as a flow parameter, the CLI builds it from flags,
Ray ships it to every worker as a plain dict (``model_dump``) and the loop rebuilds it with
``TrainConfig.model_validate``. Nothing else carries training settings.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from hvt.data.config import DataConfig
from hvt.data.placement import DecodeOn
from hvt.registry.policy import PromotionPolicy

# NAME or NAME@VERSION: a dataset in the store, optionally one version of it
_DATASET_REF = re.compile(r"^([^/@\s]+)(?:@([^/@\s]+))?$")


def parse_dataset_ref(text: str) -> tuple[str, str | None]:
    """``"kinetics@v-1a2b"`` -> ``("kinetics", "v-1a2b")``; ``"kinetics"`` -> ``("kinetics", None)`` (newest)."""
    match = _DATASET_REF.match(text or "")
    if not match or match.group(1).startswith("."):
        raise ValueError(f"{text!r}: expected NAME or NAME@VERSION, a dataset in the store, e.g. kinetics@v-1a2b3c")
    return match.group(1), match.group(2)


class ModelSpec(BaseModel):
    """Which network to build: a registered variant name plus overrides (names as in ``create_model``).

    The clip geometry is not set here: the model takes its frames and image size from the data config
    (``TrainConfig.model_overrides()``); ``TrainConfig`` checks the overrides (keys, values) when it is built,
    so a typo fails where parameters enter (CLI, flow parameters, ``--config`` JSON), before Ray starts.
    """

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    name: str = "haltingvt-micro-g03-b10"
    overrides: dict[str, Any] = Field(default_factory=dict)
    pretrained: str | None = Field(default=None, description="path or URL of DeiT / released HaltingVT weights")
    init_from: str | None = Field(
        default=None,
        description="start from a registered model's weights: MODEL[@REF] (REF: vN, latest or an alias, default "
        "champion), pinned to a version before the run is named (hvt.train.warm_start)",
    )


Recipe = Literal["scratch", "paper-finetune"]


class OptimConfig(BaseModel):
    """Optimiser and schedule: linear warm-up then cosine decay, per optimiser step.

    The defaults are the ``scratch`` recipe (AdamW from random init, for the synthetic set). Named recipes:
    ``OptimConfig.recipe("paper-finetune")`` (or ``OptimConfig.paper_finetune()``) and
    ``OptimConfig.recipe("scratch")``; keyword overrides win over the recipe.
    """

    model_config = ConfigDict(extra="forbid")

    optimizer: Literal["adam", "adamw"] = "adamw"
    lr: float = Field(default=1e-3, gt=0)
    weight_decay: float = Field(default=0.05, ge=0)
    epochs: int = Field(default=10, ge=1)
    warmup_epochs: float = Field(default=1.0, ge=0)
    min_lr_ratio: float = Field(default=0.01, ge=0, le=1)
    batch_size: int = Field(default=16, ge=1, description="clips per worker per step (real clips)")
    grad_accum_steps: int = Field(default=1, ge=1)
    grad_clip_norm: float | None = Field(default=40.0, gt=0)
    ponder_weight_scale: float = Field(default=1.0, ge=0, description="multiplies the model's ponder loss")
    motion_loss_weight: float = Field(default=1.0, ge=0)
    static_class_loss_weight: float = Field(
        default=0.0,
        ge=0,
        description=(
            "weight of the class loss on static fake clips: 0 (the scratch recipe) where the class lives only in "
            "motion, e.g. the synthetic set; 1 as in the paper (paper-finetune: on Kinetics a single frame carries "
            "class evidence)"
        ),
    )

    @classmethod
    def paper_finetune(cls, **overrides: Any) -> OptimConfig:
        """HaltingVT's fine-tuning recipe (DeiT's, from ImageNet weights): Adam, lr 1e-5, weight decay 1e-5,
        5 warm-up epochs then cosine, grad-norm clip 40, 16 clips per GPU, 20 epochs, the class loss on static
        fake clips at full weight (on Kinetics one frame carries class evidence)."""
        recipe: dict[str, Any] = dict(
            optimizer="adam", lr=1e-5, weight_decay=1e-5, epochs=20, warmup_epochs=5.0, batch_size=16,
            grad_clip_norm=40.0, static_class_loss_weight=1.0,
        )
        return cls(**{**recipe, **overrides})

    @classmethod
    def scratch(cls, **overrides: Any) -> OptimConfig:
        """From random init on the synthetic set: AdamW, lr 1e-3, weight decay 0.05, 1 warm-up epoch, no class
        loss on static fake clips (the synthetic set's class lives only in motion)."""
        return cls(**overrides)

    @classmethod
    def recipe(cls, name: Recipe, **overrides: Any) -> OptimConfig:
        builders = {"scratch": cls.scratch, "paper-finetune": cls.paper_finetune}
        if name not in builders:
            raise ValueError(f"unknown recipe {name!r}; choose one of {', '.join(builders)}")
        return builders[name](**overrides)


class ScalingSpec(BaseModel):
    """How the Ray job runs: workers, devices, fault tolerance, where the cluster is."""

    model_config = ConfigDict(extra="forbid")

    num_workers: int = Field(default=2, ge=1, description="workers; with min_workers set, the most workers")
    min_workers: int | None = Field(
        default=None, ge=1, description="elastic: run with anything from min_workers to num_workers workers"
    )
    use_gpu: bool = False
    cpus_per_worker: float = Field(default=0.5, gt=0)
    max_failures: int = Field(default=2, ge=0)
    keep_checkpoints: int = Field(default=2, ge=1)
    ray_address: str | None = Field(default=None, description="None: start a local Ray; 'auto' or host:port")
    decode_on: DecodeOn = Field(
        default="auto",
        description="where Ray Data reads and decodes: 'auto' = on nodes with the 'decode' resource when the "
        "cluster has any, else any CPU; 'decode-nodes' = only there (an autoscaler starts one); 'any' = any CPU "
        "(hvt.data.placement)",
    )
    worker_resources: dict[str, float] = Field(
        default_factory=dict,
        description="custom Ray resources each training worker also reserves, e.g. {'train': 1} to keep trainers "
        "on nodes started with --resources='{\"train\": N}'",
    )

    @model_validator(mode="after")
    def _check_elastic(self) -> ScalingSpec:
        if self.min_workers is not None and self.min_workers > self.num_workers:
            raise ValueError(f"min_workers {self.min_workers} is more than num_workers {self.num_workers}")
        return self

    @model_validator(mode="after")
    def _check_worker_resources(self) -> ScalingSpec:
        for name, amount in self.worker_resources.items():
            if name in ("CPU", "GPU", "memory") or amount <= 0:
                raise ValueError(
                    f"scaling.worker_resources {name}={amount}: give custom resources with a positive amount "
                    "(CPUs and GPUs have cpus_per_worker and use_gpu)"
                )
        return self

    def resources_per_worker(self) -> dict[str, float]:
        """Ray's ``ScalingConfig(resources_per_worker=...)``: CPUs, one GPU with ``use_gpu``, custom resources."""
        resources = {"CPU": self.cpus_per_worker, **self.worker_resources}
        if self.use_gpu:
            resources["GPU"] = 1
        return resources

    @property
    def ray_num_workers(self) -> int | tuple[int, int]:
        """What Ray's ``ScalingConfig(num_workers=...)`` takes: a count, or ``(min, max)`` when elastic."""
        if self.min_workers is None or self.min_workers == self.num_workers:
            return self.num_workers
        return (self.min_workers, self.num_workers)


class RuntimeSpec(BaseModel):
    """How the training step runs on its device; none of it changes what a run computes (not in the run name)."""

    model_config = ConfigDict(extra="forbid")

    compile: bool = Field(default=False, description="torch.compile the model's fixed-shape parts (see hvt.model)")
    log_every_steps: int = Field(default=50, ge=1, description="optimiser steps between throughput / MFU log lines")
    peak_tflops: float | None = Field(
        default=None, gt=0, description="device peak bf16 TFLOP/s for MFU; None: from the device name (CUDA)"
    )
    ordered_data: bool = Field(
        default=True,
        description=(
            "Ray Data keeps the input order (preserve_order), so the same run sees the same batches on every "
            "worker; False trades that for a little throughput"
        ),
    )
    val_cache_mb: float = Field(
        default=512,
        ge=0,
        description=(
            "MiB of decoded val clips each training worker may keep: when every worker's share of the val split "
            "fits, it is decoded once and replayed every epoch (the test transform draws nothing at random); "
            "0 or a larger share: decoded every epoch"
        ),
    )
    checkpoint_every_steps: int | None = Field(
        default=None,
        ge=1,
        description=(
            "also checkpoint every N optimiser steps inside an epoch (global steps that are multiples of N), so "
            "a lost worker or spot node costs at most N steps; None: a checkpoint at each epoch's end only"
        ),
    )


class TrackingSpec(BaseModel):
    """Experiment tracking (MLflow, ``hvt.tune.tracking``): on when a tracking URI is set here or in
    ``MLFLOW_TRACKING_URI``; it records a run, it never changes what the run computes (not in the run name)."""

    model_config = ConfigDict(extra="forbid")

    tracking_uri: str | None = Field(
        default=None, description="MLflow tracking server URI; None: $MLFLOW_TRACKING_URI, tracking off when unset"
    )
    experiment: str = Field(default="haltingvt", min_length=1, description="MLflow experiment of the runs")
    parent_run_id: str | None = Field(default=None, description="MLflow run this run is nested under (a sweep)")
    tags: dict[str, str] = Field(default_factory=dict, description="extra MLflow tags of the run")


class TrainConfig(BaseModel):
    """Everything a training run needs; its hash names the run, so a re-run resumes instead of restarting."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    store: str = Field(default="./hvt-store", description="fsspec URL of the store (local folder or s3://)")
    dataset_name: str = "synthetic-motion"
    dataset_version: str | None = Field(default=None, description="None: the newest version in the store")
    model: ModelSpec = Field(default_factory=ModelSpec)
    data: DataConfig = Field(default_factory=DataConfig)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    scaling: ScalingSpec = Field(default_factory=ScalingSpec)
    runtime: RuntimeSpec = Field(default_factory=RuntimeSpec)
    seed: int = 0
    val_views: str | None = Field(
        default=None,
        pattern=r"^[1-9]\d*x[13]$",
        description="test views of validation and of the evaluation after training: CLIPSxCROPS (crops 1 or 3), "
        "e.g. 4x3; a video's score is the mean over its views. None: data.num_clips x data.test_crops",
    )
    registry_name: str | None = Field(default=None, description="registry model name; default: the model name")
    run_name: str | None = Field(default=None, description="default: derived from the config hash")
    skip_bad_shards: bool = Field(
        default=False,
        description="leave out shards that fail their manifest sha256/count check (counted in the metrics) "
        "instead of stopping with an error",
    )
    eval_dataset: str | None = Field(
        default=None,
        description="pinned evaluation set, NAME[@VERSION] (newest when no version): the run and the champion are "
        "scored on its val split; None: the training dataset's val split",
    )
    promotion: PromotionPolicy = Field(
        default_factory=PromotionPolicy, description="when the registered run replaces the champion"
    )
    tracking: TrackingSpec = Field(default_factory=TrackingSpec, description="MLflow experiment tracking")

    @model_validator(mode="after")
    def _check_eval_dataset(self) -> TrainConfig:
        if self.eval_dataset is not None:
            try:
                parse_dataset_ref(self.eval_dataset)
            except ValueError as err:
                raise ValueError(f"eval_dataset {err}") from None
        return self

    @model_validator(mode="after")
    def _check_views(self) -> TrainConfig:
        if self.data.num_clips > 1:
            raise ValueError(
                f"data.num_clips={self.data.num_clips} would feed several clips per video to training; keep it 1 "
                f"and set val_views (e.g. '{self.data.num_clips}x{self.data.test_crops}') for multi-view validation"
            )
        return self

    @model_validator(mode="after")
    def _check_model(self) -> TrainConfig:
        geometry = self._geometry()
        for key, value in geometry.items():
            given = self.model.overrides.get(key)
            if given is not None and given != value:
                raise ValueError(
                    f"model.overrides.{key}={given!r} disagrees with the clip geometry (data.num_frames="
                    f"{self.data.num_frames}, data.crop_size={self.data.crop_size}): the model takes its frames and "
                    "image size from the data config; drop the override or change data"
                )
        from hvt.model.zoo import get_config  # torch: only where a training configuration is really built

        try:
            get_config(self.model.name, **self.model_overrides()).validate()
        except (TypeError, ValueError) as err:
            raise ValueError(f"model {self.model.name!r}: {err}") from None
        return self

    def _geometry(self) -> dict[str, int]:
        return {"num_frames": self.data.num_frames, "img_size": self.data.crop_size}

    def model_overrides(self) -> dict[str, Any]:
        """``create_model`` overrides of this run: ``model.overrides`` plus the clip geometry from ``data``
        (``num_frames``, ``img_size`` = ``crop_size``), the one place frames and size are set."""
        return {**self.model.overrides, **self._geometry()}

    @model_validator(mode="after")
    def _check_init(self) -> TrainConfig:
        if self.model.init_from and self.model.pretrained:
            raise ValueError("model.init_from and model.pretrained both give initial weights: choose one")
        return self

    @model_validator(mode="after")
    def _check_names(self) -> TrainConfig:
        for field in ("dataset_name", "registry_name", "run_name"):
            value = getattr(self, field)
            if value is not None and (not value or "/" in value or value.startswith(".")):
                raise ValueError(f"{field}={value!r}: use a plain name without '/' or a leading '.'")
        return self

    def fingerprint(self) -> str:
        """Short hash of what determines the result (not where it is stored or how many retries are allowed)."""
        # what the run is scored on and when it is promoted change no checkpoint: a re-run with another pinned
        # set or policy resumes the same run
        payload = self.model_dump(mode="json", exclude={"store", "run_name", "registry_name", "runtime",
                                                        "eval_dataset", "promotion", "tracking"})
        # retries and elasticity change how a run survives failures, not what it computes; popping min_workers
        # also keeps the names of runs made before the field existed
        for key in ("max_failures", "min_workers"):
            payload["scaling"].pop(key, None)
        if payload["model"].get("init_from") is None:  # keeps the names of runs made before the field existed
            payload["model"].pop("init_from", None)
        if payload.get("val_views") is None:  # the default keeps the names of runs made before the field existed
            payload.pop("val_views", None)
        # where tasks run changes no figure a run computes (workers fix their thread count from cpus_per_worker)
        for key in ("ray_address", "decode_on", "worker_resources"):
            payload["scaling"].pop(key, None)
        if not payload.get("skip_bad_shards"):
            payload.pop("skip_bad_shards", None)  # keeps the names of runs made before the field existed
        blob = json.dumps(payload, sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:10]

    def resolved_run_name(self, dataset_version: str) -> str:
        if self.run_name:
            return self.run_name
        return f"{self.model.name}--{self.dataset_name}-{dataset_version}--{self.fingerprint()}"

    def resolved_registry_name(self) -> str:
        return self.registry_name or self.model.name
