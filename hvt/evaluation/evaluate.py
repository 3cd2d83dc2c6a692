"""Evaluate a trained model on a dataset split: clips decoded by Ray Data, metrics by torchmetrics.

Scoring and combining the workers' shares (``evaluate_batches``, ``combine_shares``) import no Ray, so
``bench/gpu.py`` runs them under a real NCCL group on a machine without it."""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np
import torch

from hvt import storage
from hvt.collectives import gather_objects, max_over_ranks
from hvt.data.config import DataConfig
from hvt.evaluation.evaluator import Evaluator, VideoScores
from hvt.evaluation.metrics import ClipMetrics

log = logging.getLogger(__name__)


GFLOPS_PERCENTILES = (50, 90, 99)


class SpendAccumulator:
    """What a model spent and how it halted, clip by clip: per-clip GFLOPs, summed tokens per layer and the
    halting-depth histogram of kept patch tokens. ``merge`` combines the accumulators of several workers."""

    def __init__(self) -> None:
        self.gflops: list[float] = []
        self.tokens_per_layer: torch.Tensor | None = None
        self.depth_hist: torch.Tensor | None = None
        self.views_seen = 0

    def update(self, scores: VideoScores) -> None:
        """One batch of videos: GFLOPs per video (all views), tokens per layer and halting depths of every view."""
        self.gflops.extend(float(v) for v in scores.gflops.detach().float().cpu().tolist())
        self.views_seen += int(scores.view_gflops.numel())
        layer_tokens = scores.tokens_per_layer.detach().float().sum(0).cpu()
        self.tokens_per_layer = layer_tokens if self.tokens_per_layer is None else self.tokens_per_layer + layer_tokens
        depths = scores.halting_depth.detach().flatten().cpu()
        depths = depths[depths > 0].long()
        counts = torch.bincount(depths, minlength=len(layer_tokens) + 1).float()
        self.depth_hist = counts if self.depth_hist is None else self.depth_hist + counts[: len(self.depth_hist)]

    def merge(self, other: SpendAccumulator) -> None:
        self.gflops.extend(other.gflops)
        self.views_seen += other.views_seen
        for name in ("tokens_per_layer", "depth_hist"):
            mine, theirs = getattr(self, name), getattr(other, name)
            if theirs is not None:
                setattr(self, name, theirs.clone() if mine is None else mine + theirs)

    def summary(self) -> dict[str, Any]:
        """GFLOPs percentiles (as spent, per video), mean tokens per layer (per view) and the halting-depth
        histogram (all views)."""
        result: dict[str, Any] = {}
        if self.gflops:
            values = np.asarray(self.gflops)
            for q in GFLOPS_PERCENTILES:
                result[f"gflops_p{q}"] = float(np.percentile(values, q))
            result["gflops_min"], result["gflops_max"] = float(values.min()), float(values.max())
        if self.tokens_per_layer is not None and self.views_seen:
            result["tokens_per_layer"] = [float(v) for v in (self.tokens_per_layer / self.views_seen).tolist()]
        if self.depth_hist is not None:
            result["halting_depth_histogram"] = [int(v) for v in self.depth_hist.tolist()]
        return result


def evaluate_batches(
    evaluator: Evaluator, batches: Any, metrics: ClipMetrics, spend: SpendAccumulator | None = None
) -> int:
    """Score batches with ``clip`` (one or several views per video), ``label`` and ``decode_ok`` columns;
    videos that failed to decode are counted, not scored. Returns the videos scored."""
    seen = 0
    for batch in batches:
        ok = batch["decode_ok"].bool()
        metrics.count_decode_failures(int((~ok).sum()))
        if not ok.any():
            continue
        scores = evaluator.score(batch["clip"][ok])
        labels = batch["label"][ok].long().to(evaluator.device)
        metrics.update(scores.probs, labels, scores.gflops, scores.view_gflops, scores.views)
        if spend is not None:
            spend.update(scores)
        seen += int(ok.sum())
    return seen


def evaluate_model(
    model: torch.nn.Module,
    dataset_path: str,
    split: str,
    data_config: DataConfig,
    *,
    num_classes: int,
    batch_size: int = 16,
    device: torch.device | str = "cpu",
    decode_resource: str | None = None,
) -> dict[str, Any]:
    """In this process, on ``device`` (see ``evaluator.select_device``): top-1/top-5, per-class accuracy, GFLOPs
    per video (mean and percentiles) and per view, tokens per layer, the halting-depth histogram and clips/s over
    ``data_config``'s test views. Ray Data decodes (on nodes with ``decode_resource`` when given, see
    ``hvt.data.placement``); see ``evaluate_distributed`` for DDP workers."""
    from hvt.data.ray_dataset import build_clip_dataset

    dataset = build_clip_dataset(dataset_path, split, data_config, training=False, decode_resource=decode_resource)
    dataset = dataset.select_columns(["clip", "label", "decode_ok"])
    evaluator = Evaluator(model, device, max_clips=batch_size)
    metrics, spend = ClipMetrics(num_classes, device=evaluator.device), SpendAccumulator()
    started = time.perf_counter()
    evaluate_batches(evaluator, dataset.iter_torch_batches(batch_size=batch_size, drop_last=False), metrics, spend)
    result = combine_shares(metrics, spend, time.perf_counter() - started, evaluator.device)
    result["eval_workers"] = 1
    return result


def combine_shares(
    metrics: ClipMetrics, spend: SpendAccumulator, seconds: float, device: torch.device
) -> dict[str, Any]:
    """The figures of every worker's share of a split, on every rank (all ranks must call this): torchmetrics
    all-reduces the accuracies and counts, the wall time is the slowest worker's (clips/s), the per-clip spend
    is gathered. Every tensor handed to a collective is on ``device``, the worker's (NCCL refuses CPU tensors).
    Without a process group: this process's figures."""
    result: dict[str, Any] = dict(metrics.compute())
    seconds = max_over_ranks(seconds, device)
    result["clips_per_s"] = int(result.get("clips", 0)) / max(seconds, 1e-9)
    merged = SpendAccumulator()
    for part in gather_objects(spend):  # its tensors stay on the CPU, where pickling wants them
        merged.merge(part)
    result.update(merged.summary())
    return result


def read_clips(
    dataset_path: str, split: str, data_config: DataConfig, count: int, *, scan_limit: int = 64
) -> list[tuple[str, int, np.ndarray]]:
    """Up to ``count`` clips of a split as ``(key, label, uint8 [T, H, W, 3])`` with the test transform (first
    view), read straight from the shards without Ray. Among the first ``scan_limit`` samples, clips of different
    classes come first, so a few clips show a few classes. Samples that fail to decode are logged and skipped."""
    from hvt.data import VideoDecodeError, load_clip_from_bytes, resolve_shard_urls
    from hvt.data.shards import iter_tar_samples

    picked: list[tuple[str, int, np.ndarray]] = []
    spare: list[tuple[str, int, np.ndarray]] = []
    labels: set[int] = set()
    scanned = 0
    for url in resolve_shard_urls(dataset_path, split):
        fs, path = storage.get_fs(url)
        with fs.open(path, "rb") as handle:
            for sample in iter_tar_samples(handle, url):
                scanned += 1
                if sample.read_error:
                    log.warning("skipping %s for plots: %s", sample.key, sample.read_error)
                    continue
                if sample.label in labels and len(spare) >= count:
                    continue
                try:
                    clip = load_clip_from_bytes(sample.video, data_config, training=False)
                except VideoDecodeError as err:
                    log.warning("skipping %s for plots: %s", sample.key, err)
                    continue
                item = (sample.key, sample.label, clip[0] if clip.ndim == 5 else clip)
                if sample.label in labels:
                    spare.append(item)
                else:
                    labels.add(sample.label)
                    picked.append(item)
                if len(picked) >= count or scanned >= scan_limit:
                    return (picked + spare)[:count]
    return (picked + spare)[:count]


def halting_depths(model: torch.nn.Module, clips: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """Run ``model`` on uint8 clips ``[B, T, H, W, 3]``; return (``halting_depth`` ``[B, T, Hp, Wp]``, probs)."""
    scores = Evaluator(model).score(torch.from_numpy(np.ascontiguousarray(clips)))
    return scores.halting_depth, scores.probs
