"""Evaluate a trained model on a dataset split: clips decoded by Ray Data, metrics by torchmetrics."""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np
import torch

from hvt import storage
from hvt.data import DataConfig, build_clip_dataset, normalize_clips
from hvt.evaluation.metrics import ClipMetrics
from hvt.model import ModelConfig, create_model_from_config

log = logging.getLogger(__name__)


def model_from_state(state: dict[str, Any]) -> torch.nn.Module:
    """Rebuild the exact network saved in a training or registry checkpoint and load its weights."""

    model = create_model_from_config(ModelConfig.from_dict(state["model_config"]))
    model.load_state_dict(state["model"])
    trained_mode = state.get("trained_halted_token_mode")  # set by `hvt registry import` (released weights)
    if trained_mode and trained_mode != model.config.halted_token_mode:
        log.warning(
            "weights trained in %r halted-token mode run in %r mode: outputs change (see docs/FIDELITY.md)",
            trained_mode, model.config.halted_token_mode,
        )
    return model.eval()


GFLOPS_PERCENTILES = (50, 90, 99)


class SpendAccumulator:
    """What a model spent and how it halted, clip by clip: per-clip GFLOPs, summed tokens per layer and the
    halting-depth histogram of kept patch tokens. ``merge`` combines the accumulators of several workers."""

    def __init__(self) -> None:
        self.gflops: list[float] = []
        self.tokens_per_layer: torch.Tensor | None = None
        self.depth_hist: torch.Tensor | None = None

    def update(self, out: Any) -> None:
        self.gflops.extend(float(v) for v in out.gflops.detach().float().cpu().tolist())
        layer_tokens = out.tokens_per_layer.detach().float().sum(0).cpu()
        self.tokens_per_layer = layer_tokens if self.tokens_per_layer is None else self.tokens_per_layer + layer_tokens
        depths = out.halting_depth.detach().flatten().cpu()
        depths = depths[depths > 0].long()
        counts = torch.bincount(depths, minlength=len(layer_tokens) + 1).float()
        self.depth_hist = counts if self.depth_hist is None else self.depth_hist + counts[: len(self.depth_hist)]

    def merge(self, other: SpendAccumulator) -> None:
        self.gflops.extend(other.gflops)
        for name in ("tokens_per_layer", "depth_hist"):
            mine, theirs = getattr(self, name), getattr(other, name)
            if theirs is not None:
                setattr(self, name, theirs.clone() if mine is None else mine + theirs)

    def summary(self) -> dict[str, Any]:
        """GFLOPs percentiles (as spent, per clip), mean tokens per layer and the halting-depth histogram."""
        result: dict[str, Any] = {}
        if self.gflops:
            values = np.asarray(self.gflops)
            for q in GFLOPS_PERCENTILES:
                result[f"gflops_p{q}"] = float(np.percentile(values, q))
            result["gflops_min"], result["gflops_max"] = float(values.min()), float(values.max())
        if self.tokens_per_layer is not None and self.gflops:
            result["tokens_per_layer"] = [float(v) for v in (self.tokens_per_layer / len(self.gflops)).tolist()]
        if self.depth_hist is not None:
            result["halting_depth_histogram"] = [int(v) for v in self.depth_hist.tolist()]
        return result


@torch.no_grad()
def evaluate_batches(
    model: torch.nn.Module, batches: Any, metrics: ClipMetrics, spend: SpendAccumulator, device: torch.device
) -> int:
    """Run ``model`` over batches with ``clip``/``label``/``decode_ok`` columns; returns the clips seen."""
    model.eval()
    seen = 0
    for batch in batches:
        ok = batch["decode_ok"].bool()
        metrics.count_decode_failures(int((~ok).sum()))
        if not ok.any():
            continue
        x = normalize_clips(batch["clip"][ok].to(device))
        out = model(x)
        metrics.update(out.logits, batch["label"][ok].long().to(device), out.gflops)
        spend.update(out)
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
) -> dict[str, Any]:
    """In this process: top-1/top-5, per-class accuracy, GFLOPs per clip (mean and percentiles), tokens per
    layer, the halting-depth histogram and clips/s. Ray Data decodes; see ``evaluate_distributed`` for DDP
    workers."""
    dataset = build_clip_dataset(dataset_path, split, data_config, training=False)
    dataset = dataset.select_columns(["clip", "label", "decode_ok"])
    metrics, spend = ClipMetrics(num_classes), SpendAccumulator()
    started = time.perf_counter()
    evaluate_batches(model, dataset.iter_torch_batches(batch_size=batch_size, drop_last=False), metrics, spend,
                     torch.device("cpu"))
    seconds = time.perf_counter() - started
    result: dict[str, Any] = dict(metrics.compute())
    result["clips_per_s"] = int(result.get("clips", 0)) / max(seconds, 1e-9)
    result["eval_workers"] = 1
    result.update(spend.summary())
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


@torch.no_grad()
def halting_depths(model: torch.nn.Module, clips: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """Run ``model`` on uint8 clips ``[B, T, H, W, 3]``; return (``halting_depth`` ``[B, T, Hp, Wp]``, logits)."""
    model.eval()
    out = model(normalize_clips(torch.from_numpy(np.ascontiguousarray(clips))))
    return out.halting_depth, out.logits
