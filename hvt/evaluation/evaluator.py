"""The one evaluator: uint8 clips (one or several views per video) -> video scores, on one device, one precision.

Training validation, ``hvt evaluate`` (in-process and on Ray Train workers), ``hvt predict`` and the benchmarks
all go through :class:`Evaluator` (``evaluate_batches`` wraps it for batch streams):

* the device is chosen in one place, :func:`select_device` (``--gpu`` = CUDA, refused when there is none);
* :func:`autocast` is the precision rule, shared with the training loop: bf16 autocast on CUDA, fp32 on CPU;
* a video with ``V`` views (``num_clips x test_crops``, clip-major) gets the mean of its views' softmax
  probabilities (mmaction2's ``average_clips='prob'``, as the released test config) and spends the sum of its
  views' GFLOPs.
"""

from __future__ import annotations

import re
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass

import torch
from torch import Tensor

from hvt.data import DataConfig, normalize_clips
from hvt.errors import InputError

_VIEWS = re.compile(r"^\s*(\d+)\s*x\s*(\d+)\s*$")


class DeviceError(InputError):
    """The requested device is not available here."""


def select_device(gpu: bool) -> torch.device:
    """``cuda`` when ``gpu`` (``DeviceError`` if no CUDA device is visible), else ``cpu``."""
    if not gpu:
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise DeviceError("--gpu: no CUDA device is visible to this process; drop --gpu to evaluate on the CPU")
    return torch.device("cuda")


def autocast(device: torch.device) -> AbstractContextManager:
    """The training and evaluation precision: bf16 autocast on CUDA, plain fp32 elsewhere."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return nullcontext()


def parse_views(text: str) -> tuple[int, int]:
    """``"4x3"`` -> ``(4, 3)`` (temporal clips x spatial crops); crops must be 1 or 3."""
    match = _VIEWS.match(text or "")
    if not match:
        raise ValueError(f"views {text!r}: expected CLIPSxCROPS, e.g. 1x1, 4x3")
    clips, crops = int(match.group(1)), int(match.group(2))
    if clips < 1 or crops not in (1, 3):
        raise ValueError(f"views {text!r}: need at least 1 clip and 1 or 3 crops")
    return clips, crops


def with_views(config: DataConfig, views: str | None) -> DataConfig:
    """``config`` with its test views set to ``views`` (``CLIPSxCROPS``); unchanged for None."""
    if views is None:
        return config
    clips, crops = parse_views(views)
    return config.model_copy(update={"num_clips": clips, "test_crops": crops})


@dataclass
class VideoScores:
    """What the evaluator returns for ``B`` videos of ``views`` views each."""

    probs: Tensor  # [B, C] fp32, mean over views of the softmax
    gflops: Tensor  # [B] fp32, GFLOPs spent on all views of a video
    view_gflops: Tensor  # [B * V] fp32, per view (video-major)
    tokens_per_layer: Tensor  # [B * V, depth]
    halting_depth: Tensor  # [B * V, T, Hp, Wp]
    views: int


class Evaluator:
    """Scores videos with ``model`` on ``device`` (eval mode, no gradients, :func:`autocast`).

    ``max_clips``: at most this many clips (views) per forward pass; None = a whole batch at once.
    """

    def __init__(self, model: torch.nn.Module, device: torch.device | str = "cpu", max_clips: int | None = None):
        self.device = torch.device(device)
        self.model = model.to(self.device)
        self.max_clips = max_clips

    @torch.no_grad()
    def score(self, clips: Tensor) -> VideoScores:
        """``clips``: uint8 ``[B, T, H, W, 3]`` (one view) or ``[B, V, T, H, W, 3]``, on any device."""
        was_training = self.model.training
        self.model.eval()
        x = normalize_clips(clips.to(self.device, non_blocking=True))
        b, v = x.shape[0], (x.shape[1] if x.dim() == 6 else 1)
        x = x.flatten(0, 1) if x.dim() == 6 else x
        step = self.max_clips or max(1, x.shape[0])
        logits, gflops, tokens, depth = [], [], [], []
        with autocast(self.device):
            for start in range(0, x.shape[0], step):
                out = self.model(x[start:start + step])
                logits.append(out.logits.float())
                gflops.append(out.gflops.float())
                tokens.append(out.tokens_per_layer)
                depth.append(out.halting_depth)
        self.model.train(was_training)
        all_logits, view_gflops = torch.cat(logits), torch.cat(gflops)
        probs = all_logits.softmax(-1).view(b, v, -1).mean(1)
        return VideoScores(probs, view_gflops.view(b, v).sum(1), view_gflops, torch.cat(tokens), torch.cat(depth), v)
