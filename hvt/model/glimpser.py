"""Glimpser: divided space-time blocks that drop, per frame, the patches the class token attends to least.

A divided block (as in TimeSformer) runs, on a clip held as a class token ``[B, dim]`` plus patches
``[B, T, N, dim]``:

1. temporal attention across the T frames at every patch position, then a linear ``temporal_fc``;
2. spatial attention inside every frame, each frame getting its own copy of the class token; the T updated
   copies are averaged back into the one class token;
3. optional selection: keep per frame the ``keep`` patches with the highest class-token attention (averaged
   over heads) in that frame's spatial attention; the others are gone for good;
4. the MLP, on the class token and the kept patches only.
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

    def _drop(self, x: Tensor, scale: Tensor | None) -> Tensor:
        if scale is None:
            return x
        return x * scale.view(-1, *([1] * (x.dim() - 1)))

    def forward(self, cls: Tensor, patches: Tensor, keep: int | None = None) -> tuple[Tensor, Tensor, Tensor | None]:
        """``cls [B, dim]``, ``patches [B, T, N, dim]`` -> ``(cls, patches [B, T, K, dim], kept [B, T, K] | None)``.

        ``kept`` holds, in increasing order, the indices (into the N input patches of each frame) that survived;
        it is None when ``keep`` is None or ``>= N``.
        """
        b, t, n, c = patches.shape
        dp = self.drop_path
        drop = dp.training and dp.prob > 0
        s_t = sample_keep_mask(b, dp.prob, patches) if drop else None
        s_s = sample_keep_mask(b, dp.prob, patches) if drop else None
        s_m = sample_keep_mask(b, dp.prob, patches) if drop else None

        # 1. temporal attention: one sequence of T tokens per (sample, patch position)
        seq = patches.transpose(1, 2).reshape(b * n, t, c)
        res = self.temporal_attn(self.temporal_norm1(seq)).view(b, n, t, c).transpose(1, 2)
        patches = patches + self.temporal_fc(self._drop(res, s_t))

        # 2. spatial attention: one sequence of 1 + N tokens per (sample, frame)
        frames = torch.cat([cls[:, None, None, :].expand(b, t, 1, c), patches], dim=2).reshape(b * t, n + 1, c)
        qkv = self.attn.qkv(self.norm1(frames))
        select = keep is not None and keep < n
        scores = None
        if select:
            q, k, _ = self.attn.split_heads(qkv)
            # class-token row of the softmax attention, averaged over heads, without the class-token column
            logits = (q[:, :, :1] * self.attn.head_dim**-0.5) @ k.transpose(-2, -1)  # [B*T, H, 1, 1+N]
            scores = logits.softmax(dim=-1).mean(dim=1)[:, 0, 1:].reshape(b, t, n)
        res = self.attn.proj(self.attn.attend(qkv)).view(b, t, n + 1, c)
        res = self._drop(res, s_s)
        cls = cls + res[:, :, 0].mean(dim=1)
        patches = patches + res[:, :, 1:]

        # 3. token selection
        kept = None
        if select:
            kept = scores.topk(keep, dim=-1, sorted=False).indices.sort(dim=-1).values  # [B, T, K]
            patches = patches.gather(2, kept.unsqueeze(-1).expand(b, t, keep, c))

        # 4. MLP on the class token and the surviving patches
        kk = patches.shape[2]
        tokens = torch.cat([cls[:, None], patches.reshape(b, t * kk, c)], dim=1)
        tokens = tokens + self._drop(self.mlp(self.norm2(tokens)), s_m)
        return tokens[:, 0], tokens[:, 1:].reshape(b, t, kk, c), kept
