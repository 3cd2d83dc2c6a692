"""ClipMetrics: top-1/top-5, per-class accuracy and GFLOPs means computed from known logits."""

from __future__ import annotations

import torch

from hvt.evaluation.metrics import ClipMetrics
from hvt.evaluation.report import render_report


def test_metrics_from_known_predictions():
    metrics = ClipMetrics(num_classes=6)
    logits = torch.tensor(
        [
            [9.0, 8, 7, 6, 5, 4],  # label 0: top-1 hit
            [9.0, 8, 7, 6, 5, 4],  # label 4: top-5 hit only
            [9.0, 8, 7, 6, 5, 4],  # label 5: miss
            [0.0, 9, 0, 0, 0, 0],  # label 1: top-1 hit
        ]
    )
    labels = torch.tensor([0, 4, 5, 1])
    metrics.update(logits, labels, torch.tensor([1.0, 2.0, 3.0, 6.0]))
    metrics.count_decode_failures(2)
    out = metrics.compute()
    assert out["top1"] == 0.5
    assert out["top5"] == 0.75
    assert out["gflops_mean"] == 3.0
    assert out["clips"] == 4 and out["decode_failures"] == 2
    assert out["per_class_top1"][0] == 1.0 and out["per_class_top1"][5] == 0.0


def test_report_mentions_headline_numbers():
    text = render_report(
        title="m v1",
        metrics={"val_top1": 0.75, "val_top5": 1.0, "gflops_mean": 0.5, "clips": 8, "per_class_top1": [1.0, 0.5]},
        classes=["left", "right"],
        lineage={"run_name": "run-x"},
    )
    assert "75.0%" in text and "| right | 50.0% |" in text and "run-x" in text
