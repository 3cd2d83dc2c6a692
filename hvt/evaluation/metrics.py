"""Classification and cost metrics over clips, accumulated with torchmetrics.

torchmetrics synchronises its states across processes when ``torch.distributed`` is initialised, so the same
object gives exact dataset-wide numbers inside a DDP worker group and in a single process.
"""

from __future__ import annotations

import torch
from torchmetrics import MaxMetric, MeanMetric, SumMetric
from torchmetrics.classification import MulticlassAccuracy


class ClipMetrics:
    """top-1 / top-5 accuracy, per-class accuracy, mean GFLOPs per video (all its views, as spent) and per view,
    the number of views per video and sample counts. A "clip" below is a video's scored unit: with several test
    views its scores are the views' mean (see ``hvt.evaluation.evaluator``)."""

    def __init__(self, num_classes: int, device: torch.device | str = "cpu") -> None:
        self.num_classes = num_classes
        top_k = min(5, num_classes)
        self.top1 = MulticlassAccuracy(num_classes=num_classes, top_k=1, average="micro").to(device)
        self.top5 = MulticlassAccuracy(num_classes=num_classes, top_k=top_k, average="micro").to(device)
        self.per_class = MulticlassAccuracy(num_classes=num_classes, top_k=1, average="none").to(device)
        self.gflops = MeanMetric().to(device)
        self.view_gflops = MeanMetric().to(device)
        self.views = MaxMetric().to(device)
        self.clips = SumMetric().to(device)
        self.decode_failures = SumMetric().to(device)

    def update(
        self, logits: torch.Tensor, labels: torch.Tensor, gflops: torch.Tensor, view_gflops: torch.Tensor | None = None,
        views: int = 1,
    ) -> None:
        """``logits`` [B, C] (or view-averaged probabilities), ``labels`` [B], ``gflops`` [B] (as spent on each
        video, all views), ``view_gflops`` [B * views] (per view; None = ``gflops`` with one view)."""
        if logits.shape[0] == 0:
            return
        logits = logits.detach().float()
        self.top1.update(logits, labels)
        self.top5.update(logits, labels)
        self.per_class.update(logits, labels)
        self.gflops.update(gflops.detach().float())
        self.view_gflops.update((gflops if view_gflops is None else view_gflops).detach().float())
        self.views.update(torch.tensor(float(views), device=logits.device))
        self.clips.update(torch.tensor(float(labels.shape[0]), device=logits.device))

    def count_decode_failures(self, n: int) -> None:
        self.decode_failures.update(torch.tensor(float(n), device=self.clips.device))

    def compute(self) -> dict[str, float | list[float]]:
        clips = int(self.clips.compute().item())
        failures = int(self.decode_failures.compute().item())
        if clips == 0:
            return {"clips": 0, "decode_failures": failures}
        return {
            "top1": float(self.top1.compute().item()),
            "top5": float(self.top5.compute().item()),
            "per_class_top1": [float(v) for v in self.per_class.compute().tolist()],
            "gflops_mean": float(self.gflops.compute().item()),
            "gflops_per_video_mean": float(self.gflops.compute().item()),
            "gflops_per_view_mean": float(self.view_gflops.compute().item()),
            "views": int(self.views.compute().item()),
            "clips": clips,
            "decode_failures": failures,
        }
