"""Evaluation on several Ray Train workers: each evaluates its share of the split, torchmetrics syncs the
accuracies over the process group, and the per-clip GFLOPs, tokens and halting depths are gathered to every rank.

Shares are whole shard files (worker r reads shards r, r + W, ...), so every sample is evaluated exactly once:
Ray Train's own dataset splitting (``streaming_split(equal=True)``) would drop up to W - 1 samples to even
the shares out, which is fine for training but not for a number that goes into the registry.

The model's checkpoint state travels through Ray's object store (one copy, read by every worker); nothing is
written to the store, and the run's scratch space is a temporary local folder.
"""

from __future__ import annotations

import logging
import tempfile
import time
import uuid
from typing import Any

import ray
import ray.train
import ray.train.torch
from ray.train.torch import TorchTrainer

from hvt.config import ScalingSpec
from hvt.data import DataConfig, build_clip_dataset, resolve_shard_urls
from hvt.data.placement import resolve_decode_resource
from hvt.evaluation.evaluate import SpendAccumulator, combine_shares, evaluate_batches
from hvt.evaluation.evaluator import Evaluator
from hvt.evaluation.metrics import ClipMetrics
from hvt.model.zoo import model_from_state

log = logging.getLogger(__name__)

EVAL_COLUMNS = ["clip", "label", "decode_ok"]


def _eval_worker(loop_config: dict[str, Any]) -> dict[str, Any]:
    state = ray.get(loop_config["state_ref"])
    device = ray.train.torch.get_device()  # the worker's GPU with use_gpu, else the CPU
    evaluator = Evaluator(model_from_state(state), device, max_clips=int(loop_config["batch_size"]))
    metrics, spend = ClipMetrics(int(loop_config["num_classes"]), device=device), SpendAccumulator()
    context = ray.train.get_context()
    rank, world_size = context.get_world_rank(), context.get_world_size()
    my_shards = list(loop_config["shard_urls"])[rank::world_size]
    started = time.perf_counter()
    if my_shards:
        data_config = DataConfig.model_validate(loop_config["data_config"])
        dataset = build_clip_dataset(my_shards, loop_config["split"], data_config, training=False,
                                     decode_resource=loop_config.get("decode_resource"))
        batches = dataset.select_columns(EVAL_COLUMNS).iter_torch_batches(
            batch_size=int(loop_config["batch_size"]), drop_last=False)
        evaluate_batches(evaluator, batches, metrics, spend)
    result = combine_shares(metrics, spend, time.perf_counter() - started, device)
    result["eval_workers"] = world_size
    return result  # Ray Train hands rank 0's return value to the driver (``Result.return_value``)


def evaluate_distributed(
    state: dict[str, Any],
    dataset_path: str,
    split: str,
    data_config: DataConfig,
    *,
    num_classes: int,
    scaling: ScalingSpec,
    batch_size: int = 16,
) -> dict[str, Any]:
    """The metrics of ``evaluate_model``, computed by ``scaling.num_workers`` Ray Train workers (one GPU each with
    ``scaling.use_gpu``) on disjoint sets of ``split``'s shard files (a worker left without a shard still joins
    the metric sync). Ray must be running."""
    shard_urls = resolve_shard_urls(dataset_path, split)
    if not shard_urls:
        raise ValueError(f"dataset {dataset_path} has no {split!r} shards to evaluate on")
    with tempfile.TemporaryDirectory(prefix="hvt-eval-") as scratch:
        trainer = TorchTrainer(
            _eval_worker,
            train_loop_config={
                "state_ref": ray.put(state), "num_classes": num_classes, "batch_size": batch_size,
                "shard_urls": shard_urls, "split": split, "data_config": data_config.model_dump(mode="json"),
                "decode_resource": resolve_decode_resource(scaling.decode_on),
            },
            scaling_config=ray.train.ScalingConfig(
                num_workers=scaling.num_workers, use_gpu=scaling.use_gpu,
                resources_per_worker=scaling.resources_per_worker()
            ),
            run_config=ray.train.RunConfig(name=f"eval-{uuid.uuid4().hex[:12]}", storage_path=scratch),
        )
        result = trainer.fit()
    metrics = dict(result.return_value or {})
    if "clips" not in metrics:
        raise RuntimeError(f"distributed evaluation of {split} at {dataset_path} reported no metrics: {result}")
    return metrics
