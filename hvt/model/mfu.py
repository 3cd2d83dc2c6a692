"""Model FLOP utilisation: the FLOP/s a model's own count says it spent, over the device's peak.

``out.gflops`` counts multiply-adds (the paper's convention); a device's peak counts 2 FLOPs per multiply-add,
and a training step (forward + backward) costs 3 forward passes. So a training step that spent ``G`` giga
multiply-adds of forward did ``6 G 1e9`` FLOPs; inference did ``2 G 1e9``. MFU = FLOPs / seconds / peak.
Torch only, so ``bench/gpu.py`` can use it on a bare GPU machine.
"""

from __future__ import annotations

import torch

# Dense bf16 tensor-core peak, TFLOP/s (no sparsity), from the vendors' data sheets. The first entry whose name
# is in ``torch.cuda.get_device_name()`` wins, so more specific names come first.
PEAK_BF16_TFLOPS: tuple[tuple[str, float], ...] = (
    ("H100 PCIe", 756.0),
    ("H100 NVL", 835.0),
    ("GH200", 989.0),
    ("H200", 989.0),
    ("H100", 989.0),  # SXM
    ("H800", 989.0),
    ("B200", 2250.0),
    ("A100", 312.0),
    ("A800", 312.0),
    ("L40S", 362.0),
    ("L40", 181.0),
    ("L4", 121.0),
    ("A10G", 70.0),
    ("A10", 125.0),
    ("MI300X", 1307.0),
)


def peak_flops(device: torch.device | str, override_tflops: float | None = None) -> float | None:
    """Peak dense bf16 FLOP/s of ``device`` (``override_tflops`` wins), or None when unknown (CPU included)."""
    if override_tflops:
        return float(override_tflops) * 1e12
    device = torch.device(device)
    if device.type != "cuda" or not torch.cuda.is_available():
        return None
    name = torch.cuda.get_device_name(device)
    for key, tflops in PEAK_BF16_TFLOPS:
        if key in name:
            return tflops * 1e12
    return None


def training_flops(forward_gmacs: float) -> float:
    """FLOPs of forward + backward for ``forward_gmacs`` giga multiply-adds of forward: 3 x 2 x MACs."""
    return 6.0 * forward_gmacs * 1e9


def inference_flops(forward_gmacs: float) -> float:
    """FLOPs of a forward pass of ``forward_gmacs`` giga multiply-adds: 2 x MACs."""
    return 2.0 * forward_gmacs * 1e9
