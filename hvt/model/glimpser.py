"""Glimpser: divided space-time blocks that drop, per frame, the patches the class token attends to least.

A divided block (as in TimeSformer and the released HaltingVT code) runs, on a clip held as a class token
``[B, dim]`` plus patches ``[B, T, N, dim]``:

1. temporal attention across the T frames at every patch slot ``n`` (the same slot in every frame), then a
   linear ``temporal_fc``, added to the patches;
2. spatial attention inside every frame, each frame getting its own copy of the class token; the T class-token
   outputs are averaged into one class-token update ``u``;
3. a selecting block (its ``keep_rate < 1``) keeps per frame the ``keep`` patches with the highest class-token
   attention (softmax row of the class token, averaged over heads, class-token column left out) in that frame's
   spatial attention, **in decreasing order of that score**: slot ``n`` of every frame then holds that frame's
   ``n``-th most attended patch, and a later Glimpser block's temporal attention runs across frames over these
   rank slots (as the released code does). The others are gone for good. In a selecting block the class token
   becomes ``u`` alone (the released code rebuilds the sequence from the attention output of the class token,
   without its residual); a non-selecting block adds ``u`` to the class token as usual;
4. the MLP, on the class token and the kept patches only.

Stochastic depth (training only) follows the released code's granularity: the temporal residual is dropped per
(sample, patch slot), the spatial residual per (sample, frame) (the frame's class-token copy included), and the
MLP residual per sample.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .vit import Attention, DropPath, Mlp, sample_keep_mask


class DividedBlock(nn.Module):
    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        drop_path: float = 0.0,
        norm_eps: float = 1e-6,
    ) -> None:
        super().__init__()
        self.temporal_norm1 = nn.LayerNorm(dim, eps=norm_eps)
        self.temporal_attn = Attention(dim, num_heads, qkv_bias)
        self.temporal_fc = nn.Linear(dim, dim)
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps)
        self.attn = Attention(dim, num_heads, qkv_bias)
        self.norm2 = nn.LayerNorm(dim, eps=norm_eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.drop_path = DropPath(drop_path)

    def _scale(self, *shape: int, ref: Tensor) -> Tensor | None:
        """Stochastic-depth scale of the given leading shape (one draw per element), or None when off."""
        dp = self.drop_path
        if not (dp.training and dp.prob > 0):
            return None
        count = 1
        for s in shape:
            count *= s
        return sample_keep_mask(count, dp.prob, ref).view(*shape)

    def forward(self, cls: Tensor, patches: Tensor, keep: int | None = None) -> tuple[Tensor, Tensor, Tensor | None]:
        """``cls [B, dim]``, ``patches [B, T, N, dim]`` -> ``(cls, patches [B, T, K, dim], kept [B, T, K] | None)``.

        ``keep``: None for a non-selecting block (``keep_rate == 1``); otherwise the patches kept per frame
        (``1 <= keep <= N``; ``keep == N`` still re-orders the patches and drops the class-token residual, as the
        released code does for any ``keep_rate < 1``). ``kept`` holds, per frame, the indices (into the N input
        slots) of the surviving patches in decreasing order of class-token attention; None when not selecting.
        """
        b, t, n, c = patches.shape
        select = keep is not None
        if select and not 1 <= keep <= n:
            raise ValueError(f"keep must be within [1, {n}] patches per frame, got {keep}")

        # 1. temporal attention: one sequence of T tokens per (sample, patch slot)
        seq = patches.transpose(1, 2).reshape(b * n, t, c)
        res = self.temporal_attn(self.temporal_norm1(seq)).view(b, n, t, c).transpose(1, 2)
        s_t = self._scale(b, 1, n, 1, ref=patches)
        if s_t is not None:
            res = res * s_t
        patches = patches + self.temporal_fc(res)

        # 2. spatial attention: one sequence of 1 + N tokens per (sample, frame)
        frames = torch.cat([cls[:, None, None, :].expand(b, t, 1, c), patches], dim=2).reshape(b * t, n + 1, c)
        qkv = self.attn.qkv(self.norm1(frames))
        scores = None
        if select:
            q, k, _ = self.attn.split_heads(qkv)
            # class-token row of the softmax attention, averaged over heads, without the class-token column
            logits = (q[:, :, :1] * self.attn.head_dim**-0.5) @ k.transpose(-2, -1)  # [B*T, H, 1, 1+N]
            scores = logits.softmax(dim=-1).mean(dim=1)[:, 0, 1:].reshape(b, t, n)
        res = self.attn.proj(self.attn.attend(qkv)).view(b, t, n + 1, c)
        s_s = self._scale(b, t, 1, 1, ref=patches)
        if s_s is not None:
            res = res * s_s
        update = res[:, :, 0].mean(dim=1)
        patches = patches + res[:, :, 1:]

        # 3. token selection (rank order), class token = its attention update alone
        kept = None
        if select:
            kept = scores.topk(keep, dim=-1, sorted=True).indices  # [B, T, K], most attended first
            patches = patches.gather(2, kept.unsqueeze(-1).expand(b, t, keep, c))
            cls = update
        else:
            cls = cls + update

        # 4. MLP on the class token and the surviving patches
        kk = patches.shape[2]
        tokens = torch.cat([cls[:, None], patches.reshape(b, t * kk, c)], dim=1)
        res = self.mlp(self.norm2(tokens))
        s_m = self._scale(b, 1, 1, ref=patches)
        if s_m is not None:
            res = res * s_m
        tokens = tokens + res
        return tokens[:, 0], tokens[:, 1:].reshape(b, t, kk, c), kept
