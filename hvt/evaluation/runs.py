"""A checkpoint state scored on a dataset split, where the scoring runs, and the identity of the clips it saw.

``hvt.stages`` (after training, ``hvt evaluate``) and ``hvt.promotion`` (the champion scored again on a
challenger's set) score through these, so champion and challenger meet the same evaluator, views and precision.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from hvt.config import ScalingSpec
from hvt.data import DataConfig
from hvt.data.placement import resolve_decode_resource
from hvt.evaluation.distributed import evaluate_distributed
from hvt.evaluation.evaluate import evaluate_model
from hvt.evaluation.evaluator import select_device
from hvt.integrity import SplitCheck
from hvt.model.zoo import model_from_state


def run_evaluation(
    state: dict[str, Any],
    dataset_path: str,
    split: str,
    data_config: DataConfig,
    *,
    num_classes: int,
    batch_size: int,
    scaling: ScalingSpec | None,
    on_workers: bool = False,
) -> dict[str, Any]:
    """Evaluate a checkpoint state on a split (``data_config``'s test views): on ``scaling.num_workers`` Ray Train
    workers (torchmetrics synced over DDP, one GPU each with ``scaling.use_gpu``) when that is more than one or
    ``on_workers``, else in this process on ``select_device(scaling.use_gpu)``. Ray must be running."""
    if scaling is not None and (scaling.num_workers > 1 or on_workers):
        return evaluate_distributed(state, dataset_path, split, data_config, num_classes=num_classes,
                                    scaling=scaling, batch_size=batch_size)
    device = select_device(scaling is not None and scaling.use_gpu)
    decode_resource = resolve_decode_resource(scaling.decode_on) if scaling is not None else None
    return evaluate_model(model_from_state(state), dataset_path, split, data_config, num_classes=num_classes,
                          batch_size=batch_size, device=device, decode_resource=decode_resource)


def eval_set_identity(manifest_sha256: str, split: str, check: SplitCheck | None, decode_failures: int) -> str:
    """Identity of the clips actually evaluated, compared by ``registry.decide``: the manifest's sha256 when every
    shard of ``split`` was read and every clip decoded; otherwise a hash that also covers the shards left out
    and the number of clips that failed, so a shrunken set never compares as the full one."""
    skipped = sorted(p.path for p in check.skipped) if check else []
    if not skipped and not decode_failures:
        return manifest_sha256
    blob = json.dumps({"manifest": manifest_sha256, "split": split, "skipped_shards": skipped,
                       "decode_failures": int(decode_failures)}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def evaluation_scaling(scaling: ScalingSpec) -> ScalingSpec:
    """How the post-training evaluation runs: on the training run's workers, except for a CPU run on a one-node
    Ray, where the workers would share this process's cores and a worker group would only add its start-up (about
    15 s here): then in this process, which gives the same metrics (``tests/test_collectives_device.py``)."""
    import ray

    if scaling.use_gpu or scaling.num_workers == 1 or len([n for n in ray.nodes() if n.get("Alive")]) > 1:
        return scaling
    return scaling.model_copy(update={"num_workers": 1, "min_workers": None})
