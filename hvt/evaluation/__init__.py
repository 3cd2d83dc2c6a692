"""Evaluation: metrics accumulated with torchmetrics, reports and plots."""

from hvt.evaluation.metrics import ClipMetrics

__all__ = ["ClipMetrics"]
