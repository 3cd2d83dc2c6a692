"""Evaluation: metrics accumulated with torchmetrics, reports and plots."""

from hvt.lazy import lazy_exports

# public name -> submodule; imported on first use (hvt/lazy.py)
_LAZY_EXPORTS = {
    "ClipMetrics": "metrics",
}
__getattr__, __dir__, __all__ = lazy_exports(__name__, _LAZY_EXPORTS)
