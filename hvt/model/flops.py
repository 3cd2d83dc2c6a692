"""Analytic FLOP counts in the paper's convention: one multiply-add = one FLOP (as fvcore counts).

Only matrix products are counted (patch-embedding conv, every Linear, the two attention matmuls, the
Glimpser's class-token score row); norms, softmax, GELU, additions and the halting bookkeeping are not, as in
fvcore. ``torch.utils.flop_counter.FlopCounterMode`` counts the same products at 2 FLOPs per multiply-add.

Per block, with width d, MLP hidden m, n tokens:

* joint block: ``n * (4 d^2 + 2 d m) + 2 n^2 d`` (qkv + proj, MLP, q@k^T and attn@v);
* divided (Glimpser) block on T frames of N patches, keeping K per frame after it:
  temporal ``T N (4 d^2) + N * 2 T^2 d``, ``temporal_fc`` ``T N d^2``, spatial (class token copied into every
  frame) ``T (1+N) 4 d^2 + T * 2 (1+N)^2 d``, the class-token score row when it selects ``T (1+N) d``,
  MLP ``(1 + T K) 2 d m`` (it runs after selection).

For DeiT-S at 8x224^2 (N=196): Joint VT = 56.47 G; the no-halting bounds (Glimpser kept, every joint block on
all kept tokens) are 17.63 / 26.53 / 37.17 G for keep rates 0.3 / 0.5 / 0.7 (paper: 17.6 / 26.5 / 37.2).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from .config import ModelConfig

GIGA = 1e9


def joint_block_macs(n: Any, dim: int, mlp_hidden: int) -> Any:
    """Multiply-adds of one joint block on ``n`` tokens (``n`` may be a tensor: per sample)."""
    return n * (4 * dim * dim + 2 * dim * mlp_hidden) + 2 * n * n * dim


def divided_block_macs(frames: int, n_in: int, n_out: int, dim: int, mlp_hidden: int) -> float:
    """Multiply-adds of one divided space-time (Glimpser) block: ``n_in`` patches per frame in, ``n_out`` kept."""
    t, n = frames, n_in
    temporal = t * n * 4 * dim * dim + n * 2 * t * t * dim + t * n * dim * dim
    spatial = t * (1 + n) * 4 * dim * dim + t * 2 * (1 + n) ** 2 * dim
    select = t * (1 + n) * dim if n_out < n_in else 0
    mlp = (1 + t * n_out) * 2 * dim * mlp_hidden
    return float(temporal + spatial + select + mlp)


def patch_embed_macs(frames: int, patches: int, dim: int, patch_size: int, in_chans: int) -> float:
    return float(frames * patches * dim * in_chans * patch_size * patch_size)


def head_macs(cfg: ModelConfig) -> float:
    return float(cfg.embed_dim * cfg.num_classes + (2 * cfg.embed_dim if cfg.motion_head else 0))


def frames_and_patches(
    cfg: ModelConfig, num_frames: int | None, img_size: int | None, patches_per_frame: int | None = None
) -> tuple[int, int]:
    """``(frames, patches per frame)`` of a clip for ``cfg``; ``None`` takes the config's own value (a square
    ``img_size``); ``patches_per_frame`` gives the count directly (a non-square input)."""
    t = num_frames or cfg.num_frames
    if patches_per_frame is not None:
        return t, patches_per_frame
    grid = (img_size or cfg.img_size) // cfg.patch_size
    return t, grid * grid


def block_macs(
    cfg: ModelConfig,
    num_frames: int | None = None,
    img_size: int | None = None,
    tokens_per_layer: Tensor | None = None,
    patches_per_frame: int | None = None,
) -> list[Any]:
    """Multiply-adds of every block. Joint blocks use ``tokens_per_layer[:, i]`` (per sample, a tensor) when
    given, else all tokens left by the Glimpser (the no-halting bound)."""
    t, n = frames_and_patches(cfg, num_frames, img_size, patches_per_frame)
    hidden = int(cfg.embed_dim * cfg.mlp_ratio)
    out: list[Any] = []
    kept = cfg.kept_per_frame(n)
    n_in = n
    for i in range(cfg.glimpser_depth):
        out.append(divided_block_macs(t, n_in, kept[i], cfg.embed_dim, hidden))
        n_in = kept[i]
    seq = 1 + t * n_in
    for i in range(cfg.glimpser_depth, cfg.depth):
        if tokens_per_layer is None:
            out.append(float(joint_block_macs(seq, cfg.embed_dim, hidden)))
        else:
            nt = tokens_per_layer[:, i].to(torch.float64)
            out.append(joint_block_macs(nt, cfg.embed_dim, hidden))
    return out


def model_macs(
    cfg: ModelConfig,
    num_frames: int | None = None,
    img_size: int | None = None,
    tokens_per_layer: Tensor | None = None,
    patches_per_frame: int | None = None,
) -> Any:
    """Multiply-adds of one clip (float), or per sample (``[B]`` float64 tensor) from ``tokens_per_layer``
    (``[B, depth]``, the tokens each sample had active entering each block): the one place per-clip cost is
    counted, for the analytic summaries and for the GFLOPs a forward pass reports."""
    t, n = frames_and_patches(cfg, num_frames, img_size, patches_per_frame)
    total: Any = patch_embed_macs(t, n, cfg.embed_dim, cfg.patch_size, cfg.in_chans) + head_macs(cfg)
    for m in block_macs(cfg, num_frames, img_size, tokens_per_layer, patches_per_frame):
        total = total + m
    return total


def dense_config(cfg: ModelConfig) -> ModelConfig:
    """The Joint VT of the same backbone: every block joint, no Glimpser, no halting."""
    return cfg.replace(glimpser_depth=0, keep_rate=(), halting=False)
