"""A-ViT style token halting over the joint space-time blocks, in three flavours for halted tokens.

Per halting block l (0-based, L blocks) and active token i, with block output ``y_i``:

* score ``h_i = sigmoid(scale * y_i[0] - center + offset_l)`` (``offset_l`` is a calibration hook, 0 unless a
  benchmark or test sets it; it is not part of the state dict); the last block forces ``h_i = 1``;
* cumulative score ``c_i += h_i``; the token halts at the first block where ``c_i >= 1 - eps``;
* remainder ``R_i`` starts at 1 and loses ``h_i`` at every block where the token does not halt;
* the class token's output is ``sum_l w_l * y_0^l`` with ``w = h`` before halting and ``w = R`` at halting;
* ponder cost per token ``N_i + R_i`` (N = blocks it went through); ``ponder = mean over all tokens``.

Halted tokens, by ``mode``:

* ``official``: the released code. Halted tokens are zeroed and stay in the sequence, so they are still
  attended as keys/values (a zero vector after LayerNorm is the norm's bias, so they are not inert).
* ``mask``: halted tokens stay in the tensor but an attention mask hides them from every query.
* ``remove``: halted tokens leave the computation. The active tokens of the whole batch are kept as packed
  rows ``[sum_b n_b, dim]`` (grouped by sample); norms, projections and MLP run on those rows only, and
  attention runs within each sample on the packed rows (cost ``sum_b n_b^2``; a variable-length kernel on CUDA),
  with one device-to-host sync per halting block (see ``packed.py`` and ``varlen.py``). It computes the same
  maths as ``mask``; only the float summation order differs (max |diff| ~1e-7 on logits).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from .packed import run_remove


@dataclass
class HaltingResult:
    cls: Tensor  # [B, dim] halting-weighted class-token output (before the final norm)
    token_depth: Tensor  # [B, N0] 1-based halting block (among the halting blocks) of every token, cls at 0
    tokens_per_layer: Tensor  # [B, L] active tokens entering each halting block
    ponder: Tensor  # scalar mean(N + R) over the B * N0 tokens
    layer_mean_h: Tensor  # [L] mean raw halting score of the active tokens at each block (for the prior)


def _scores(out0: Tensor, scale: float, center: float, offset: Tensor | float) -> Tensor:
    return torch.sigmoid(out0 * scale - center + offset)


def run_halting(
    blocks: nn.ModuleList | list,
    x: Tensor,
    *,
    scale: float,
    center: float,
    eps: float,
    offsets: Tensor,
    mode: str,
) -> HaltingResult:
    """Run the halting blocks (the joint blocks after the Glimpser) over ``x`` with A-ViT halting.

    Args:
        blocks: the joint transformer blocks, in order (L of them; the last forces every token to halt).
        x: ``[B, N0, dim]`` tokens entering the first halting block, the class token at index 0.
        scale, center: the halting gate ``h = sigmoid(scale * y[..., 0] - center + offset)`` (paper: gamma = 10,
            beta = 5 / 10 / 20).
        eps: a token halts when its cumulative score reaches ``1 - eps`` (0.01 in the paper).
        offsets: ``[L]`` calibration offsets added inside the gate (zeros for a trained model).
        mode: ``official`` | ``mask`` | ``remove``, what happens to halted tokens (module docstring).

    Returns:
        :class:`HaltingResult` (class-token output ``[B, dim]``, halting depth ``[B, N0]``, tokens per block
        ``[B, L]``, ponder ``mean(N + R)`` unweighted, mean gate per block ``[L]``).

    Raises:
        ValueError: an unknown ``mode``.

    Source: A-ViT (Yin et al., CVPR 2022) as adapted by HaltingVT (arXiv 2401.04975, Sec. 3.3) and its released
    code; ``remove`` is ours and computes the same maths as ``mask``.
    """
    if mode == "remove":
        return HaltingResult(*run_remove(blocks, x, scale, center, eps, offsets))
    if mode in ("official", "mask"):
        return _run_full(blocks, x, scale, center, eps, offsets, mode)
    raise ValueError(f"unknown halted_token_mode {mode!r}")


def _run_full(blocks, x: Tensor, scale, center, eps, offsets, mode) -> HaltingResult:
    b, n0, c = x.shape
    depth_l = len(blocks)
    thr = 1.0 - eps
    dev, dt = x.device, torch.float32  # halting bookkeeping in fp32, also under autocast
    cum = torch.zeros(b, n0, device=dev, dtype=dt)
    rem = torch.ones(b, n0, device=dev, dtype=dt)
    active = torch.ones(b, n0, device=dev, dtype=torch.bool)
    cls_out = torch.zeros(b, c, device=dev, dtype=dt)
    ponder_sum = torch.zeros((), device=dev, dtype=dt)
    token_depth = torch.zeros(b, n0, device=dev, dtype=dt)
    tokens = torch.zeros(b, depth_l, device=dev, dtype=torch.long)
    mean_h = []
    all_active = True
    for layer, blk in enumerate(blocks):
        tokens[:, layer] = active.sum(1)
        act = active.to(dt)
        if mode == "official":
            out = blk(x if all_active else x * active.unsqueeze(-1).to(x.dtype))
        else:
            mask = None
            if not all_active:
                # a sample whose tokens all halted keeps every key visible (its outputs are unused anyway)
                keys = active | ~active.any(dim=1, keepdim=True)
                mask = keys[:, None, None, :]
            out = blk(x, mask)
        h_raw = _scores(out[..., 0].float(), scale, center, offsets[layer])
        mean_h.append((h_raw * act).sum() / act.sum().clamp_min(1.0))
        h = torch.ones_like(h_raw) if layer == depth_l - 1 else h_raw
        cum = cum + h * act
        not_reached = (cum < thr) & active
        reached = active & ~not_reached
        weight = torch.where(reached, rem, h * not_reached.to(dt))
        cls_out = cls_out + weight[:, :1] * out[:, 0].float()
        ponder_sum = ponder_sum + ((layer + 1 + rem) * reached.to(dt)).sum()
        token_depth = torch.where(reached, torch.full_like(token_depth, layer + 1), token_depth)
        rem = rem - h * not_reached.to(dt)
        active = not_reached
        all_active = False
        x = out
    return HaltingResult(cls_out, token_depth, tokens, ponder_sum / (b * n0), torch.stack(mean_h))


def distribution_prior(layer_mean_h: Tensor, target_depth: float) -> Tensor:
    """A-ViT distribution prior: KL(target || p), p = per-block mean halting scores normalised over blocks,
    target = a Gaussian (std 1) over the halting blocks centred at ``target_depth`` (1-based)."""
    n = layer_mean_h.numel()
    p = layer_mean_h / layer_mean_h.sum().clamp_min(1e-12)
    p = p.clamp(0.01, 0.99)
    pos = torch.arange(1, n + 1, device=p.device, dtype=p.dtype)
    target = torch.exp(-0.5 * (pos - target_depth) ** 2)
    target = target / target.sum()
    return torch.sum(target * (torch.log(target.clamp_min(1e-12)) - torch.log(p)))


@torch.no_grad()
def calibrate_halting_offset(model: nn.Module, video: Tensor, active_fraction: float, iters: int = 12) -> float:
    """Find one halting offset (see ``HaltingVT.set_halting_offset``) such that, on ``video``, the tokens
    entering the halting blocks stay active for ``active_fraction`` of the (token, block) slots on average
    (1.0 = nothing halts before the last block). For benchmarks and tests on untrained weights, where the
    halting scores are arbitrary: the per-token spread of ``t[0]`` then spreads halting over the blocks.
    Sets the offset on the model and returns it."""
    cfg = model.config
    g = cfg.glimpser_depth
    was_training = model.training
    model.eval()
    lo, hi = -40.0, 40.0  # offset -> active fraction is decreasing

    def fraction(off: float) -> float:
        model.set_halting_offset(off)
        out = model(video)
        tpl = out.tokens_per_layer[:, g:].float()
        return float(tpl.mean() / tpl[:, 0].mean())

    for _ in range(iters):
        mid = (lo + hi) / 2
        if fraction(mid) > active_fraction:
            lo = mid
        else:
            hi = mid
    best = (lo + hi) / 2
    model.set_halting_offset(best)
    model.train(was_training)
    return best
